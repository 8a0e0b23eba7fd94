"""Labelled query pairs with their embeddings, for the false-hit guard's verifier.

Pairs come from seeded samples of quora_qqp and paws_wiki, and all of
fow_cache_pairs, read with the loaders of ``cache_service.pair_eval``. Embedding
them takes many minutes on CPU, so the vectors are cached in a gitignored folder
(``var/guard_embeddings`` by default), keyed by the model name and a hash of the
pair texts. The data itself never enters the repository.

``load_unused_pairs`` draws a second evaluation set from the quora_qqp and paws_wiki
pairs outside the training samples. Training never reads them, and they were not
looked at while the guard was designed, so they measure the guard the way new
traffic would.
"""

from __future__ import annotations

import hashlib
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache_service.embedding import Embedder, Vectors
from cache_service.pair_eval import LOADERS, LabelledPair, sample

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("var/guard_embeddings")
# Seeded samples keep the first embedding run affordable: 24,000 quora sentences
# took 22 minutes on 2 shared, busy cores. Later runs read the cached vectors.
SAMPLE_SIZES = {"quora_qqp": 12_000, "paws_wiki": 2_000}
SAMPLE_SEED = 0
# Unused pairs: a seeded draw from what the samples above leave out. Embedding them
# the first time takes about 10 minutes on 2 cores.
UNUSED_SIZES = {"quora_qqp": 6_000, "paws_wiki": 2_000}
UNUSED_SEED = 7


@dataclass(frozen=True)
class EmbeddedPairs:
    """Pairs of one dataset and the unit vectors of both sides, row by row."""

    dataset: str
    pairs: list[LabelledPair]
    first: Vectors
    second: Vectors

    def cosines(self) -> np.ndarray:
        """Return the cosine of each pair."""
        return np.einsum("ij,ij->i", self.first, self.second)


def load_pairs(data_dir: Path) -> dict[str, list[LabelledPair]]:
    """Read every dataset, sampled down to ``SAMPLE_SIZES`` pairs where listed."""
    datasets = {name: load(data_dir) for name, load in LOADERS.items()}
    for name, size in SAMPLE_SIZES.items():
        datasets[name] = sample(datasets[name], size, SAMPLE_SEED)
    return datasets


def load_unused_pairs(data_dir: Path) -> dict[str, list[LabelledPair]]:
    """Read pairs of quora_qqp and paws_wiki that ``load_pairs`` does not return.

    A pair counts as used when its two texts appear in the training sample, with
    either label. Datasets small enough to be read whole have no unused pairs and
    map to an empty list.
    """
    unused = {}
    for name, size in UNUSED_SIZES.items():
        everything = LOADERS[name](data_dir)
        used = {
            (pair.first, pair.second)
            for pair in sample(everything, SAMPLE_SIZES[name], SAMPLE_SEED)
        }
        rest = [pair for pair in everything if (pair.first, pair.second) not in used]
        random.Random(UNUSED_SEED).shuffle(rest)
        unused[name] = rest[:size]
    return unused


def embed_pairs(
    dataset: str,
    pairs: list[LabelledPair],
    embedder: Embedder,
    cache_dir: Path = DEFAULT_CACHE_DIR,
) -> EmbeddedPairs:
    """Embed both sides of ``pairs``, reading and writing the vector cache."""
    digest = hashlib.sha256(embedder.model_name.encode())
    for pair in pairs:
        digest.update(f"{pair.first}\x1f{pair.second}\x1e".encode())
    path = cache_dir / f"{dataset}-{digest.hexdigest()[:16]}.npz"
    if path.exists():
        with np.load(path) as stored:
            return EmbeddedPairs(dataset, pairs, stored["first"], stored["second"])

    logger.info("embedding_pairs", extra={"dataset": dataset, "pairs": len(pairs)})
    # The first run embeds for minutes, so the terminal gets a progress line.
    print(
        f"embedding {len(pairs):,} {dataset} pairs; the vectors are cached in "
        f"{cache_dir} for later runs",
        file=sys.stderr,
        flush=True,
    )
    first = embedder.embed([pair.first for pair in pairs])
    second = embedder.embed([pair.second for pair in pairs])
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, first=first, second=second)
    temporary.replace(path)
    return EmbeddedPairs(dataset, pairs, first, second)
