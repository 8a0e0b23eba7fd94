"""Crash and backup tests of the cache service as a real process.

Each test starts ``python -m cache_service`` with the real embedding model and a
SQLite store in a temporary folder, then kills, snapshots or restores it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from querygate.cache.v1 import cache_pb2, cache_pb2_grpc
from service_processes import child_environment, start_cache_process

SCOPE = cache_pb2.Scope(tenant="acme", model="auto")
# Stored before the burst; each paraphrase must find its original semantically.
ANCHORS = (
    ("Who wrote Hamlet?", "Who is the author of Hamlet?"),
    ("What is the capital of France?", "What is France's capital?"),
)
WAIT_TIMEOUT_S = 120.0


def _store(stub: cache_pb2_grpc.CacheServiceStub, query: str) -> str:
    response = stub.Store(
        cache_pb2.StoreRequest(
            query=query, scope=SCOPE, answer=f"answer to {query}", finish_reason="stop"
        ),
        timeout=30,
    )
    assert response.stored, response.reason
    return str(response.entry_id)


def _lookup(
    stub: cache_pb2_grpc.CacheServiceStub, query: str
) -> cache_pb2.LookupResponse:
    return stub.Lookup(cache_pb2.LookupRequest(query=query, scope=SCOPE), timeout=30)


@dataclass
class WriteBurst:
    """Threads that store distinct questions until stopped or until a store fails.

    ``acknowledged`` maps each entry id that Store returned to its query, the
    phase (a number the test moves forward) in which its request started, and
    the phase in which its response arrived.
    """

    stub: cache_pb2_grpc.CacheServiceStub
    threads: int = 1
    phase: int = 0
    acknowledged: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for number in range(self.threads):
            worker = threading.Thread(target=self._run, args=(number,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} stores"
            time.sleep(0.05)

    def _run(self, worker: int) -> None:
        number = 0
        while not self._stop.is_set():
            query = f"Burst {worker}-{number}: what is the square root of {number}?"
            started_in = self.phase
            try:
                entry_id = _store(self.stub, query)
            except grpc.RpcError:
                return
            with self._lock:
                self.acknowledged[entry_id] = (query, started_in, self.phase)
            number += 1


def test_kill_9_keeps_acknowledged_entries(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    first = start_cache_process(tmp_path, data_dir)
    try:
        with grpc.insecure_channel(first.target) as channel:
            burst = WriteBurst(cache_pb2_grpc.CacheServiceStub(channel), threads=4)
            burst.start()
            burst.wait_for(60)
            # SIGKILL lands while the four writers have stores in flight.
            first.kill()
            burst.stop()
    finally:
        first.kill()
    acknowledged = dict(burst.acknowledged)

    second = start_cache_process(tmp_path, data_dir)
    try:
        with grpc.insecure_channel(second.target) as channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            found = {
                entry_id: _lookup(stub, query)
                for entry_id, (query, _, _) in acknowledged.items()
            }
            stats = stub.Stats(cache_pb2.StatsRequest(), timeout=30)
    finally:
        second.terminate()

    assert len(acknowledged) >= 60
    missing = [entry_id for entry_id, reply in found.items() if not reply.hit]
    assert missing == []
    assert all(reply.entry_id == entry_id for entry_id, reply in found.items())
    assert all(
        reply.answer == f"answer to {acknowledged[entry_id][0]}"
        for entry_id, reply in found.items()
    )
    # Stores in flight at the kill may or may not have committed.
    assert stats.entries >= len(acknowledged)
    assert stats.index_vectors == stats.entries


def _snapshot_entry_ids(path: Path) -> set[str]:
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT entry_id FROM entries").fetchall()
    finally:
        connection.close()
    return {str(row[0]) for row in rows}


def _restore(snapshot: Path, data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cache_service", "restore", str(snapshot), *extra],
        env=child_environment(QUERYGATE_CACHE_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_snapshot_during_burst_restores_exactly(
    tmp_path: Path,
) -> None:
    first = start_cache_process(tmp_path, tmp_path / "data")
    try:
        with grpc.insecure_channel(first.target) as channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            anchor_ids = [_store(stub, original) for original, _ in ANCHORS]
            burst = WriteBurst(stub)
            burst.start()
            burst.wait_for(20)
            burst.phase = 1
            snapshot = stub.Snapshot(cache_pb2.SnapshotRequest(), timeout=120)
            burst.phase = 2
            burst.wait_for(len(burst.acknowledged) + 10)
            burst.stop()
            later_ids = [_store(stub, f"Stored after the snapshot, {n}") for n in "ab"]
    finally:
        first.terminate()

    acknowledged = dict(burst.acknowledged)
    in_snapshot = _snapshot_entry_ids(Path(snapshot.path))
    # Acknowledged before the Snapshot call, or started after it returned.
    before = {key for key, (_, _, acked_in) in acknowledged.items() if acked_in == 0}
    after = {key for key, (_, started_in, _) in acknowledged.items() if started_in == 2}
    assert snapshot.entries == len(in_snapshot)
    assert snapshot.vectors == len(in_snapshot)
    assert set(anchor_ids) | before <= in_snapshot
    assert not in_snapshot & (after | set(later_ids))
    assert in_snapshot <= set(anchor_ids) | set(acknowledged)

    restored_dir = tmp_path / "restored"
    command = _restore(Path(snapshot.path), restored_dir)
    stdout, stderr = command.communicate(timeout=120)
    assert command.returncode == 0, stderr
    assert json.loads(stdout)["entries"] == len(in_snapshot)

    second = start_cache_process(tmp_path, restored_dir)
    try:
        with grpc.insecure_channel(second.target) as channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            stats = stub.Stats(cache_pb2.StatsRequest(), timeout=30)
            burst_found = {
                entry_id: _lookup(stub, query).entry_id
                for entry_id, (query, _, _) in acknowledged.items()
            }
            paraphrases = [_lookup(stub, paraphrase) for _, paraphrase in ANCHORS]
            later = [_lookup(stub, f"Stored after the snapshot, {n}") for n in "ab"]
    finally:
        second.terminate()

    assert stats.entries == len(in_snapshot)
    assert stats.index_vectors == len(in_snapshot)
    for entry_id, found_id in burst_found.items():
        expected = entry_id if entry_id in in_snapshot else ""
        assert found_id == expected, entry_id
    assert [reply.layer for reply in paraphrases] == [
        cache_pb2.HIT_LAYER_SEMANTIC
    ] * len(ANCHORS)
    assert [reply.entry_id for reply in paraphrases] == anchor_ids
    assert [reply.hit for reply in later] == [False, False]


def test_restore_refuses_data_dir_of_running_service(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    running = start_cache_process(tmp_path, data_dir)
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = cache_pb2_grpc.CacheServiceStub(channel)
            _store(stub, "Who painted the Mona Lisa?")
            snapshot = stub.Snapshot(cache_pb2.SnapshotRequest(), timeout=120)
            command = _restore(Path(snapshot.path), data_dir, "--force")
            _, stderr = command.communicate(timeout=120)
            still_there = _lookup(stub, "Who painted the Mona Lisa?")
    finally:
        running.terminate()

    assert command.returncode == 1
    assert "a cache service has" in stderr
    assert "stop it, then restore" in stderr
    assert still_there.hit
