"""Tests of ReloadClassifier: a real grpc.aio server on port 0, real artifacts."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from querygate.router.v1 import router_pb2, router_pb2_grpc

from router_service.classifier import MANIFEST_FILE, MODEL_FILE, default_artifact_dir
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
