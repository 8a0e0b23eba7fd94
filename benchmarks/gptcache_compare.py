"""Run GPTCache on the bench-cache pairs and workload, in its own environment.

GPTCache is installed only in ``.venv-bench`` (``make bench-venv``), never in the
services' environment, so ``benchmarks.gptcache_runner`` runs there as a separate
process. This module writes its input, starts it and reads its output back.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.bench_cache_data import PairSet
from benchmarks.bench_cache_stats import sweep
from benchmarks.gptcache_mapping import parse_runner_output, runner_input

REPO = Path(__file__).resolve().parent.parent


def run_gptcache(
    sets: list[PairSet],
    workload: tuple[list[str], list[str]] | None,
    args: argparse.Namespace,
    workdir: Path,
    console: Console,
) -> dict[str, Any]:
    """Run GPTCache on the same pairs and workload in its own environment.

    Returns the report's ``gptcache`` section, with ``status`` "ran" or the reason
    it was skipped.

    Raises:
        RuntimeError: ``--gptcache on`` and the environment is missing, or the
            runner failed.
    """
    python = args.gptcache_python
    if args.gptcache == "off":
        return {"status": "skipped: --gptcache off"}
    if not python.exists():
        reason = f"skipped: {python} does not exist; run make bench-venv to create it"
        if args.gptcache == "on":
            raise RuntimeError(f"GPTCache cannot run: {reason}")
        console.print(f"GPTCache {reason}", style="yellow", markup=False)
        return {"status": reason}

    pairs = [
        {
            "set": item.name,
            "first": pair.first,
            "second": pair.second,
            "same_meaning": pair.same_meaning,
        }
        for item in sets
        for pair in item.pairs
    ]
    entries, queries = workload if workload else ([], [])
    request = runner_input(
        pairs,
        min(args.thresholds),
        entries,
        queries,
        args.client_counts,
        args.threshold,
    )
    # A fresh folder every run, because GPTCache reloads files it finds there.
    gptcache_dir = workdir / "gptcache"
    if args.gptcache_dir is not None:
        args.gptcache_dir.mkdir(parents=True, exist_ok=True)
        gptcache_dir = Path(tempfile.mkdtemp(prefix="gptcache-", dir=args.gptcache_dir))
    input_path = workdir / "gptcache-input.json"
    output_path = workdir / "gptcache-output.json"
    input_path.write_text(json.dumps(request), encoding="utf-8")
    command = [
        str(python),
        "-m",
        "benchmarks.gptcache_runner",
        "--input",
        str(input_path),
        "--output",
        str(output_path),
        "--onnx-file",
        str(args.onnx_dir / "model.onnx"),
        "--workdir",
        str(gptcache_dir),
        "--embeddings",
        args.gptcache_embeddings,
    ]
    if args.py_spy is not None:
        command += ["--py-spy", str(args.py_spy)]
    log_path = workdir / "gptcache-runner.log"
    status = console.status("GPTCache: replaying pairs and timing lookups")
    with status, log_path.open("wb") as log:
        finished = subprocess.run(command, cwd=REPO, stdout=log, stderr=log)
    if args.gptcache_dir is not None:
        shutil.rmtree(gptcache_dir, ignore_errors=True)
    if finished.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"the GPTCache runner failed:\n{tail}")

    results = parse_runner_output(json.loads(output_path.read_text(encoding="utf-8")))
    return {
        "status": "ran",
        "version": results.gptcache_version,
        "embedding": results.embedding,
        "embedding_check_min_cosine": results.embedding_check_min_cosine,
        "replay_similarity_threshold": results.lookup_threshold,
        "sets": {
            name: {
                "sweep": [rates.to_json() for rates in sweep(found, args.thresholds)]
            }
            for name, found in results.outcomes.items()
        },
        "speed": {
            name: [run.to_json() for run in runs]
            for name, runs in results.speed.items()
        },
        "profiles": {
            f"GPTCache, {name} embedding": profile
            for name, profile in results.profiles.items()
        },
    }
