"""VectorIndex: every kind finds, forgets, persists and validates."""

from __future__ import annotations

import os

import numpy as np
import pytest

from chunkcache.errors import ConfigError, InvalidRequestError, NotFoundError
from chunkcache.retrieval.index import IndexConfig, VectorIndex

DIM = 16
KINDS = {
    "flat": IndexConfig(kind="flat"),
    "hnsw": IndexConfig(kind="hnsw"),
    "ivf": IndexConfig(kind="ivf", ivf_train_min=400),
    "auto": IndexConfig(kind="auto", auto_flat_limit=400),
}


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)  # [n, DIM]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(params=list(KINDS))
def kind(request):
    return request.param


def filled(kind: str, n: int = 600) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    index = VectorIndex(DIM, KINDS[kind])
    ids = np.arange(n, dtype=np.int64) * 7 + 1000  # sparse, not 0..n-1
    vectors = unit_vectors(n)
    index.add(ids[: n // 2], vectors[: n // 2])
    index.add(ids[n // 2:], vectors[n // 2:])
    return index, ids, vectors


def test_each_vector_finds_itself_first(kind):
    index, ids, vectors = filled(kind)
    assert len(index) == len(ids)
    scores, found = index.search(vectors[:50], 3)
    assert scores.shape == found.shape == (50, 3) and found.dtype == np.int64
    assert (found[:, 0] == ids[:50]).all()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_structures_switch_as_documented():
    assert filled("flat")[0].structure == "flat"
    assert filled("hnsw")[0].structure == "hnsw"
    assert filled("ivf")[0].structure == "ivf"
    assert filled("auto")[0].structure == "hnsw"
    assert filled("auto", n=100)[0].structure == "flat"  # below auto_flat_limit
    assert filled("ivf", n=100)[0].structure == "flat"  # too few vectors to train


def test_removed_ids_are_never_returned(kind):
    index, ids, vectors = filled(kind)
    gone = ids[:20]
    index.remove(gone)
    assert len(index) == len(ids) - 20 and ids[0] not in index
    _, found = index.search(vectors[:40], 10)
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    assert (found[20:, 0] == ids[20:40]).all()
    index.add(gone[:5], vectors[:5])  # an id can come back
    assert (index.search(vectors[:5], 1)[1][:, 0] == gone[:5]).all()


def test_mass_removal_compacts_and_stays_correct(kind):
    index, ids, vectors = filled(kind)
    index.remove(ids[:500])
    assert len(index) == 100
    _, found = index.search(vectors[500:], 1)
    assert (found[:, 0] == ids[500:]).all()


def test_save_and_load_give_identical_results(kind, tmp_path):
    index, ids, vectors = filled(kind)
    index.remove(ids[:10])
    queries = unit_vectors(30, seed=1)
    before = index.search(queries, 8)
    path = str(tmp_path / "vectors.faiss")
    index.save(path)
    assert os.listdir(tmp_path) == ["vectors.faiss"]  # the temp file was renamed away
    loaded = VectorIndex.load(path, KINDS[kind])
    assert loaded.structure == index.structure and len(loaded) == len(index)
    after = loaded.search(queries, 8)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-6)
    np.testing.assert_array_equal(loaded.ids(), np.sort(ids[10:]))


def test_load_refuses_an_index_of_another_kind(tmp_path):
    index, _, _ = filled("hnsw")
    path = str(tmp_path / "v.faiss")
    index.save(path)
    with pytest.raises(ConfigError, match="is 'hnsw', which kind='flat' cannot use"):
        VectorIndex.load(path, IndexConfig(kind="flat"))


def test_small_and_empty_indexes():
    index = VectorIndex(DIM)
    scores, ids = index.search(unit_vectors(2), 5)
    assert scores.shape == ids.shape == (2, 0)
    index.add(np.array([5], dtype=np.int64), unit_vectors(1))
    assert index.search(unit_vectors(2), 5)[1].shape == (2, 1)  # k capped at len


def test_bad_input_is_rejected_and_changes_nothing():
    index, ids, vectors = filled("flat", n=10)
    with pytest.raises(InvalidRequestError, match="already in the index: \\[1000\\]"):
        index.add(ids[:1], vectors[:1])
    with pytest.raises(InvalidRequestError, match="contain duplicates"):
        index.add(np.array([1, 1], dtype=np.int64), vectors[:2])
    with pytest.raises(InvalidRequestError, match=r"shape \[n, 16\], got \(2, 8\)"):
        index.add(np.array([1, 2], dtype=np.int64), np.zeros((2, 8), np.float32))
    with pytest.raises(InvalidRequestError, match="2 ids but 3 vectors"):
        index.add(np.array([1, 2], dtype=np.int64), vectors[:3])
    with pytest.raises(NotFoundError, match=r"not in the index: \[99\]"):
        index.remove(np.array([ids[0], 99], dtype=np.int64))
    with pytest.raises(InvalidRequestError, match="k must be an int >= 1, got 0"):
        index.search(vectors[:1], 0)
    assert len(index) == 10 and ids[0] in index


@pytest.mark.parametrize(
    "kwargs, message",
    [({"kind": "annoy"}, "kind must be one of"), ({"hnsw_m": 0}, "hnsw_m must be an int >= 1"),
     ({"compact_fraction": 0.0}, "compact_fraction must be in")],
)
def test_config_is_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        IndexConfig(**kwargs)
