"""Tests of ReloadClassifier: a real grpc.aio server on port 0, real artifacts."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.classifier import MANIFEST_FILE, MODEL_FILE, default_artifact_dir
from router_service.classifier_reload import ArtifactWatcher, artifact_fingerprint
from router_service.errors import ConfigError
from router_service.server import RunningServer, create_server
from router_service.testing import FakeCache, settings_for_tests

pytestmark = pytest.mark.anyio

CONFIGURED_VERSION = "reload-test-configured"


def copy_artifact(destination: Path, version: str) -> Path:
    """Copy the committed artifact to `destination` with a new manifest version.

    The version field is not checked on load, so the copy loads like the original.
    """
    shutil.copytree(default_artifact_dir(), destination)
    manifest_path = destination / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["version"] = version
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    return destination


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    configured = copy_artifact(tmp_path / "configured", CONFIGURED_VERSION)
    running = await create_server(
        settings_for_tests(classifier_artifact_dir=configured), cache=FakeCache()
    )
    await running.wait_until_serving(timeout_s=60)
    yield running
    await running.stop(grace_s=0.5)


@pytest.fixture
async def stub(
    server: RunningServer,
) -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)


async def classify_version(stub: router_pb2_grpc.RouterServiceStub) -> str:
    response = await stub.Classify(
        router_pb2.ClassifyRequest(query="What is the capital of France?"), timeout=10
    )
    return response.classifier_version


async def test_reload_swaps_in_new_version(
    stub: router_pb2_grpc.RouterServiceStub, tmp_path: Path
) -> None:
    artifact = copy_artifact(tmp_path / "next", "reload-test-next")

    response = await stub.ReloadClassifier(
        router_pb2.ReloadClassifierRequest(artifact_dir=str(artifact)), timeout=60
    )

    assert response.classifier_version == "reload-test-next"
    assert response.previous_classifier_version == CONFIGURED_VERSION
    assert await classify_version(stub) == "reload-test-next"


async def test_reload_without_dir_loads_configured_artifact(
    stub: router_pb2_grpc.RouterServiceStub, tmp_path: Path
) -> None:
    artifact = copy_artifact(tmp_path / "next", "reload-test-next")
    await stub.ReloadClassifier(
        router_pb2.ReloadClassifierRequest(artifact_dir=str(artifact)), timeout=60
    )

    response = await stub.ReloadClassifier(
        router_pb2.ReloadClassifierRequest(), timeout=60
    )

    assert response.classifier_version == CONFIGURED_VERSION
    assert response.previous_classifier_version == "reload-test-next"


def tamper_model(artifact: Path) -> None:
    with (artifact / MODEL_FILE).open("ab") as model_file:
        model_file.write(b"tampered")


def tamper_feature_version(artifact: Path) -> None:
    manifest_path = artifact / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["feature_version"] = "text-v0"
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def remove_manifest(artifact: Path) -> None:
    (artifact / MANIFEST_FILE).unlink()


def corrupt_manifest(artifact: Path) -> None:
    (artifact / MANIFEST_FILE).write_text("{not json", encoding="utf-8")


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (tamper_model, "does not match the SHA-256"),
        (tamper_feature_version, "feature_version must be"),
        (remove_manifest, "is missing"),
        (corrupt_manifest, "is not valid JSON"),
    ],
    ids=["model-file-altered", "feature-version", "no-manifest", "bad-json"],
)
async def test_bad_artifact_is_rejected_and_old_one_stays(
    stub: router_pb2_grpc.RouterServiceStub,
    tmp_path: Path,
    tamper: Callable[[Path], None],
    message: str,
) -> None:
    artifact = copy_artifact(tmp_path / "bad", "reload-test-bad")
    tamper(artifact)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReloadClassifier(
            router_pb2.ReloadClassifierRequest(artifact_dir=str(artifact)), timeout=60
        )

    details = caught.value.details() or ""
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert message in details
    assert "make train" in details
    assert CONFIGURED_VERSION in details
    assert await classify_version(stub) == CONFIGURED_VERSION


@pytest.mark.parametrize(
    "artifact_dir",
    ["relative/artifact", "/nonexistent/querygate/artifact", "/tmp/a\x00b"],
    ids=["relative", "not-a-directory", "nul-byte"],
)
async def test_bad_path_is_invalid_argument(
    stub: router_pb2_grpc.RouterServiceStub, artifact_dir: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReloadClassifier(
            router_pb2.ReloadClassifierRequest(artifact_dir=artifact_dir), timeout=10
        )

    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("artifact_dir:")
    assert await classify_version(stub) == CONFIGURED_VERSION


async def test_reloads_under_traffic_fail_no_request(
    stub: router_pb2_grpc.RouterServiceStub, tmp_path: Path
) -> None:
    artifacts = [
        copy_artifact(tmp_path / "a", "reload-test-a"),
        copy_artifact(tmp_path / "b", "reload-test-b"),
    ]
    versions = {CONFIGURED_VERSION, "reload-test-a", "reload-test-b"}
    calls_per_task, tasks = 50, 4
    failures: list[BaseException] = []
    seen_versions: set[str] = set()

    async def send_traffic(task_index: int) -> None:
        for i in range(calls_per_task):
            query = f"Explain step {i} of proof {task_index} in detail"
            try:
                if i % 2:
                    await stub.Route(
                        router_pb2.RouteRequest(query=query, tenant="acme"),
                        timeout=30,
                    )
                else:
                    response = await stub.Classify(
                        router_pb2.ClassifyRequest(query=query), timeout=30
                    )
                    seen_versions.add(response.classifier_version)
            except grpc.aio.AioRpcError as error:
                failures.append(error)

    async def reload_alternately() -> list[str]:
        loaded = []
        for i in range(5):
            response = await stub.ReloadClassifier(
                router_pb2.ReloadClassifierRequest(artifact_dir=str(artifacts[i % 2])),
                timeout=60,
            )
            loaded.append(response.classifier_version)
        return loaded

    results = await asyncio.gather(
        reload_alternately(), *(send_traffic(index) for index in range(tasks))
    )

    assert failures == []
    assert results[0] == ["reload-test-a", "reload-test-b"] * 2 + ["reload-test-a"]
    assert seen_versions <= versions
    assert await classify_version(stub) == "reload-test-a"


def write_manifest_field(artifact: Path, **changes: object) -> None:
    manifest_path = artifact / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest.update(changes)
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    """Poll `condition` until it is true; fail the test after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.05)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, Path]]:
    artifact = copy_artifact(tmp_path / "watched", "watch-v1")
    running = await create_server(
        settings_for_tests(
            classifier_artifact_dir=artifact, classifier_watch_interval_s=0.05
        ),
        cache=FakeCache(),
    )
    await running.wait_until_serving(timeout_s=60)
    yield running, artifact
    await running.stop(grace_s=0.5)


async def test_watcher_reloads_changed_artifact(
    watched: tuple[RunningServer, Path], caplog: pytest.LogCaptureFixture
) -> None:
    running, artifact = watched
    caplog.set_level(logging.INFO, logger="router_service.classifier_reload")

    async def serving(version: str) -> bool:
        return running.router.classifier.version == version

    write_manifest_field(artifact, version="watch-v2")
    await wait_for(lambda: serving("watch-v2"), timeout_s=60)

    # A bad artifact in the folder is rejected and the loaded one keeps serving.
    write_manifest_field(artifact, version="watch-v3", feature_version="text-v0")

    async def rejected() -> bool:
        return "classifier_reload_failed" in caplog.messages

    await wait_for(rejected, timeout_s=60)
    assert running.router.classifier.version == "watch-v2"


async def test_watcher_is_off_at_zero_interval(tmp_path: Path) -> None:
    artifact = copy_artifact(tmp_path / "unwatched", "watch-off")
    running = await create_server(
        settings_for_tests(
            classifier_artifact_dir=artifact, classifier_watch_interval_s=0.0
        ),
        cache=FakeCache(),
    )
    try:
        await running.wait_until_serving(timeout_s=60)

        assert running.watcher is None
    finally:
        await running.stop(grace_s=0.5)


def test_negative_watch_interval_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"watch_interval_s must be 0.*got -1"):
        settings_for_tests(classifier_watch_interval_s=-1.0)


def test_fingerprint_is_none_without_manifest(tmp_path: Path) -> None:
    artifact = copy_artifact(tmp_path / "artifact", "fingerprint")
    before = artifact_fingerprint(artifact)

    (artifact / MODEL_FILE).touch()
    after_touch = artifact_fingerprint(artifact)
    (artifact / MANIFEST_FILE).unlink()

    assert before is not None
    assert after_touch is not None
    assert after_touch != before
    assert artifact_fingerprint(artifact) is None


class FailingReloader:
    """Stands in for ClassifierReloader; every reload raises an unexpected error."""

    def __init__(self) -> None:
        self.calls = 0

    async def reload(self, artifact_dir: str) -> None:
        self.calls += 1
        raise RuntimeError("disk vanished")


async def test_watcher_survives_unexpected_reload_error(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / MODEL_FILE).write_bytes(b"model")
    (artifact / MANIFEST_FILE).write_text("{}", encoding="utf-8")
    reloader = FailingReloader()
    watcher = ArtifactWatcher(reloader, artifact, interval_s=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(0.05)
        (artifact / MANIFEST_FILE).write_text('{"v": 1}', encoding="utf-8")

        async def called(times: int) -> bool:
            return reloader.calls >= times

        await wait_for(lambda: called(1), timeout_s=30)
        (artifact / MANIFEST_FILE).write_text('{"v": 2}', encoding="utf-8")
        await wait_for(lambda: called(2), timeout_s=30)

        assert not task.done()
    finally:
        task.cancel()
