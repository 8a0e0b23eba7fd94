"""Write a classifier artifact: the skops model file plus its JSON manifest.

The files are written to a temporary folder beside the target and swapped in by two
renames, so a reader never sees a half-written file or a mix of old and new files.
Between the two renames the folder is briefly absent. `ComplexityClassifier.load`
in router_service.classifier is the reading side.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sklearn
import skops
import skops.io
from sklearn.pipeline import Pipeline

from router_service.classifier import (
    ARTIFACT_FORMAT,
    MANIFEST_FILE,
    MODEL_FILE,
    TIERS,
    DecisionPolicy,
    file_sha256,
)
from router_service.features import FEATURE_VERSION


def artifact_version(created: datetime.datetime, model_sha256: str) -> str:
    """Join a UTC time stamp and the first 12 hex digits of the model hash."""
    return f"{created.strftime('%Y%m%dT%H%M%SZ')}-{model_sha256[:12]}"


def replace_policy(directory: Path, policy: DecisionPolicy) -> dict[str, Any]:
    """Store a new decision policy in the artifact's manifest and return it.

    The manifest gets `policy_updated_at` and a new version, which ends in a hash
    of the policy so that two policies never share a version. It is written to a
    temporary file in the same folder and renamed over the old one, so a reader
    sees the old or the new manifest, never part of one. The model file stays.
    """
    path = directory / MANIFEST_FILE
    manifest = json.loads(path.read_text(encoding="utf-8"))
    updated = datetime.datetime.now(datetime.UTC)
    manifest["decision_policy"] = policy.to_json()
    policy_json = json.dumps(manifest["decision_policy"], sort_keys=True)
    policy_hash = hashlib.sha256(policy_json.encode()).hexdigest()[:8]
    model_version = artifact_version(updated, manifest["model_sha256"])
    manifest["version"] = f"{model_version}-{policy_hash}"
    manifest["policy_updated_at"] = updated.isoformat(timespec="seconds")
    descriptor, name = tempfile.mkstemp(dir=directory, suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        temporary.chmod(0o644)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return dict(manifest)


def build_manifest(
    *,
    model_sha256: str,
    model_kind: str,
    data_fingerprint: str,
    metrics: Mapping[str, Any],
    policy: DecisionPolicy,
    training: Mapping[str, Any],
    created_at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Assemble the manifest that `read_manifest` checks on load.

    The version string joins the creation time and the first 12 hex digits of the
    model hash (`artifact_version`), so two different models never share a
    version.
    """
    created = created_at or datetime.datetime.now(datetime.UTC)
    return {
        "format": ARTIFACT_FORMAT,
        "version": artifact_version(created, model_sha256),
        "created_at": created.isoformat(timespec="seconds"),
        "model_file": MODEL_FILE,
        "model_sha256": model_sha256,
        "model_kind": model_kind,
        "labels": list(TIERS),
        "feature_version": FEATURE_VERSION,
        "sklearn_version": sklearn.__version__,
        "skops_version": skops.__version__,
        "data_fingerprint": data_fingerprint,
        "decision_policy": policy.to_json(),
        "metrics": dict(metrics),
        "training": dict(training),
    }


def write_artifact(
    pipeline: Pipeline, directory: Path, manifest_fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Save `pipeline` and its manifest into `directory`, replacing what was there.

    `manifest_fields` are the keyword arguments of `build_manifest` except
    `model_sha256`, which is computed from the written file. Returns the manifest.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory.parent))
    staging.chmod(0o755)  # mkdtemp creates 0700; the artifact is committed and shared
    try:
        model_path = staging / MODEL_FILE
        skops.io.dump(pipeline, model_path, compression=zipfile.ZIP_DEFLATED)
        manifest = build_manifest(
            model_sha256=file_sha256(model_path), **manifest_fields
        )
        (staging / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _swap_in(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _swap_in(staging: Path, directory: Path) -> None:
    # Two renames: the old folder moves aside, then the new one takes its name.
    retired = directory.with_name(f".retired-{directory.name}")
    shutil.rmtree(retired, ignore_errors=True)
    if directory.exists():
        directory.rename(retired)
    staging.rename(directory)
    shutil.rmtree(retired, ignore_errors=True)
