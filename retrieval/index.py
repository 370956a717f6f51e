"""A FAISS inner-product index over int64 ids: the vector side of a corpus.

Vectors are L2-normalised embeddings ``[n, dim]`` float32, so inner product is cosine
similarity. Every structure sits inside an ``IndexIDMap2`` so that callers' int64 ids are
kept and vectors can be reconstructed by id (for rebuilds).

Kinds (``IndexConfig.kind``):

- ``"flat"``: ``IndexFlatIP``, exact. Removal is a real ``remove_ids``.
- ``"hnsw"``: ``IndexHNSWFlat`` with inner product. HNSW cannot delete, so removal marks ids
  in a **tombstone set** that every search excludes through a FAISS ``IDSelector`` (the
  graph walk skips them, so k live results come back without over-fetching). The graph is
  **rebuilt** from its own stored vectors once tombstones exceed ``compact_fraction`` of the
  entries, and always before ``save``, so a saved file never holds a deleted vector.
- ``"ivf"``: ``IndexIVFFlat``. Needs training, so it stays flat (exact) until it holds
  ``ivf_train_min`` vectors, then trains ``nlist = min(4*sqrt(n), n/39)`` centroids on
  everything it holds (39 points per centroid is FAISS's own minimum) and moves over.
  Removal uses tombstones like HNSW. It is not retrained as it grows: call ``rebuild()``.
- ``"auto"`` (default): flat below ``auto_flat_limit`` vectors (50,000), HNSW from there on.
  Why 50,000: a flat scan costs ``n*dim`` multiply-adds per query, for 50k x 384 that is
  ~19M, a few milliseconds on one CPU core and exact, with no build cost and real deletes.
  Beyond that the scan time grows linearly while HNSW stays near a millisecond at ~0.95+
  recall, so the one-time graph build (seconds at 50k) pays for itself. The switch happens
  inside the ``add`` that crosses the limit; shrinking below it later does not switch back.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass

import faiss
import numpy as np

from chunkcache.errors import ConfigError, InvalidRequestError, NotFoundError, StorageError, check_int

KINDS = ("auto", "flat", "hnsw", "ivf")


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "auto"
    auto_flat_limit: int = 50_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 64
    ivf_train_min: int = 10_000
    ivf_nprobe: int = 16
    compact_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"index kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("auto_flat_limit", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search",
                     "ivf_train_min", "ivf_nprobe"):
            check_int(name, getattr(self, name), 1)
        if not 0.0 < self.compact_fraction <= 1.0:
            raise ConfigError(f"compact_fraction must be in (0, 1], got {self.compact_fraction!r}")


class VectorIndex:
    """Inner-product search over ``[n, dim]`` float32 vectors keyed by unique int64 ids."""

    def __init__(self, dim: int, config: IndexConfig = IndexConfig()):
        check_int("dim", dim, 1)
        self.dim = dim
        self.config = config
        self._index = self._build("flat" if config.kind in ("auto", "ivf") else config.kind, None)
        self._ids: set[int] = set()  # live ids
        self._tombstones: set[int] = set()  # ids still in an HNSW/IVF structure, but deleted
        self._selector: tuple[faiss.IDSelector, ...] | None = None  # cache; keeps refs alive

    # ----- bookkeeping -------------------------------------------------------------------
    @property
    def structure(self) -> str:
        """What currently backs the index: ``"flat"``, ``"hnsw"`` or ``"ivf"``."""
        inner = faiss.downcast_index(self._index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            return "hnsw"
        if isinstance(inner, faiss.IndexIVFFlat):
            return "ivf"
        return "flat"

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, chunk_id: int) -> bool:
        return int(chunk_id) in self._ids

    def ids(self) -> np.ndarray:
        """Live ids, sorted ``[n]`` int64."""
        return np.array(sorted(self._ids), dtype=np.int64)

    # ----- mutation ----------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors [n, dim]`` under ``ids [n]``; ids must be new and unique."""
        ids = self._check_ids(ids)
        vectors = self._check_vectors(vectors, "vectors")
        if len(ids) != len(vectors):
            raise InvalidRequestError(f"{len(ids)} ids but {len(vectors)} vectors")
        if len(set(ids.tolist())) != len(ids):
            raise InvalidRequestError("ids passed to add() contain duplicates")
        present = [i for i in ids.tolist() if i in self._ids]
        if present:
            raise InvalidRequestError(f"ids already in the index: {present[:10]}")
        if self._tombstones.intersection(ids.tolist()):
            self.rebuild()  # a tombstoned id must leave the structure before it comes back
        if len(ids) == 0:
            return
        self._index.add_with_ids(vectors, ids)
        self._ids.update(ids.tolist())
        self._maybe_upgrade()

    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids [n]``; NotFoundError (and nothing removed) if any is absent."""
        ids = self._check_ids(ids)
        missing = [i for i in ids.tolist() if i not in self._ids]
        if missing:
            raise NotFoundError(f"ids not in the index: {missing[:10]}")
        if len(ids) == 0:
            return
        if self.structure == "flat":
            self._index.remove_ids(ids)
        else:
            self._tombstones.update(ids.tolist())
            self._selector = None
        self._ids.difference_update(ids.tolist())
        if len(self._tombstones) > self.config.compact_fraction * max(self._index.ntotal, 1):
            self.rebuild()

    def rebuild(self) -> None:
        """Rebuild the current structure from its live vectors (drops tombstones, retrains IVF)."""
        self._rebuild_as(self.structure)

    # ----- search ------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores [q, k'] float32, ids [q, k'] int64)``.

        ``k' = min(k, len(self))``; HNSW/IVF may pad a row with id -1 (score -inf-ish) when
        they find fewer live neighbours than asked.
        """
        check_int("k", k, 1, error=InvalidRequestError)
        queries = self._check_vectors(vectors, "queries")
        k = min(k, len(self._ids))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, ids = self._index.search(queries, k, params=self._search_params())
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    # ----- persistence -------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the index to ``path`` atomically (temp file in the same folder + os.replace)."""
        if self._tombstones:
            self.rebuild()
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".vectors-", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            faiss.write_index(self._index, tmp)
            os.replace(tmp, path)
        except Exception as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise StorageError(f"cannot write index to {path!r}: {exc}") from exc

    @classmethod
    def load(cls, path: str, config: IndexConfig = IndexConfig()) -> "VectorIndex":
        """Read an index written by ``save``; ConfigError if it cannot be of ``config.kind``."""
        try:
            raw = faiss.read_index(path)
        except Exception as exc:
            raise StorageError(f"cannot read index {path!r}: {exc}") from exc
        if not isinstance(raw, faiss.IndexIDMap2):
            raise StorageError(f"{path!r} holds a {type(raw).__name__}, expected IndexIDMap2")
        self = cls(raw.d, config)
        self._index = raw
        allowed = {"flat": {"flat"}, "hnsw": {"hnsw"}, "ivf": {"flat", "ivf"},
                   "auto": {"flat", "hnsw"}}[config.kind]
        if self.structure not in allowed:
            raise ConfigError(
                f"index {path!r} is {self.structure!r}, which kind={config.kind!r} cannot use"
            )
        self._tune(faiss.downcast_index(raw.index))
        self._ids = set(faiss.vector_to_array(raw.id_map).tolist())
        return self

    # ----- internals ---------------------------------------------------------------------
    def _maybe_upgrade(self) -> None:
        n, kind = len(self._ids), self.config.kind
        if self.structure == "flat" and kind == "auto" and n >= self.config.auto_flat_limit:
            self._rebuild_as("hnsw")
        elif self.structure == "flat" and kind == "ivf" and n >= self.config.ivf_train_min:
            self._rebuild_as("ivf")

    def _rebuild_as(self, structure: str) -> None:
        inner = faiss.downcast_index(self._index.index)
        all_ids = faiss.vector_to_array(self._index.id_map)  # [ntotal], row order of inner
        vectors = inner.reconstruct_n(0, inner.ntotal) if inner.ntotal else None  # [ntotal, dim]
        keep = np.array([i not in self._tombstones for i in all_ids.tolist()], dtype=bool)
        live = vectors[keep] if vectors is not None else np.zeros((0, self.dim), np.float32)
        self._index = self._build(structure, live)
        if len(live):
            self._index.add_with_ids(live, all_ids[keep])
        self._tombstones.clear()
        self._selector = None

    def _build(self, structure: str, train: np.ndarray | None) -> faiss.IndexIDMap2:
        cfg = self.config
        if structure == "flat":
            inner = faiss.IndexFlatIP(self.dim)
        elif structure == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = cfg.hnsw_ef_construction
        else:
            n = 0 if train is None else len(train)
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
            quantizer = faiss.IndexFlatIP(self.dim)
            inner = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.train(train)  # the Python wrapper keeps `quantizer` alive with `inner`
        self._tune(inner)
        return faiss.IndexIDMap2(inner)

    def _tune(self, inner: faiss.Index) -> None:
        if isinstance(inner, faiss.IndexHNSWFlat):
            inner.hnsw.efSearch = self.config.hnsw_ef_search
        elif isinstance(inner, faiss.IndexIVFFlat):
            inner.nprobe = self.config.ivf_nprobe
            inner.make_direct_map()  # reconstruct-by-id, for rebuilds

    def _search_params(self) -> faiss.SearchParameters | None:
        structure = self.structure
        if structure == "flat":
            return None
        if self._tombstones and self._selector is None:
            batch = faiss.IDSelectorBatch(np.array(sorted(self._tombstones), dtype=np.int64))
            self._selector = (faiss.IDSelectorNot(batch), batch)
        sel = self._selector[0] if self._tombstones else None
        if structure == "hnsw":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=self.config.hnsw_ef_search)
        return faiss.SearchParametersIVF(sel=sel, nprobe=self.config.ivf_nprobe)

    def _check_ids(self, ids: np.ndarray) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise InvalidRequestError(f"ids must be a 1-D int64 array, got {arr.dtype} {arr.shape}")
        return np.ascontiguousarray(arr, dtype=np.int64)

    def _check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(vectors)
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise InvalidRequestError(f"{what} must have shape [n, {self.dim}], got {arr.shape}")
        return np.ascontiguousarray(arr, dtype=np.float32)
