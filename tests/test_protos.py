"""Check that the committed gRPC stubs match what protoc generates from protos/."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    protos = _proto_files()
    assert protos, "no .proto files under protos/"
    for proto in protos:
        target = tmp_path / proto.relative_to(PROTO_ROOT).parent
        target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *map(str, protos),
        ],
        check=True,
    )

    fresh = sorted(
        path.relative_to(tmp_path)
        for path in tmp_path.rglob("*")
        if path.name.endswith(GENERATED_SUFFIXES)
    )
    committed = sorted(
        path.relative_to(PROTO_ROOT)
        for path in PROTO_ROOT.rglob("*")
        if path.name.endswith(GENERATED_SUFFIXES)
    )
    assert fresh == committed, (
        "stub files differ from the .proto files: run make protos"
    )
    stale = [
        str(rel)
        for rel in fresh
        if not filecmp.cmp(tmp_path / rel, PROTO_ROOT / rel, shallow=False)
    ]
    assert not stale, f"stale generated stubs {stale}: run make protos and commit"
    shutil.rmtree(tmp_path)


def test_every_proto_package_is_versioned() -> None:
    for proto in _proto_files():
        version_dir = proto.parent.name
        assert version_dir.startswith("v") and version_dir[1:].isdigit(), (
            f"{proto} is not under a versioned folder such as v1/"
        )
