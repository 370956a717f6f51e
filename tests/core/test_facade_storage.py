"""The facade over a real LMDB store: corrupt entries are recomputed, a crashed warm-up resumes."""

import os
import struct
import subprocess
import sys
import textwrap

import lmdb
import pytest

from chunkcache import ChunkCache

PASSAGES = [
    {"title": "Alder", "text": "Alder trees grow along wet river banks and fix nitrogen in the soil."},
    {"title": "Birch", "text": "Birch bark peels in thin white sheets and burns even when damp."},
    {"title": "Cedar", "text": "Cedar wood resists rot, which is why it is used for shingles."},
]
QUESTION = "Which tree has bark that burns when damp?"


def _mutate_all(kv_dir, how: str) -> int:
    env = lmdb.open(str(kv_dir), max_dbs=8, subdir=True)
    db = env.open_db(b"kv")
    with env.begin(write=True, db=db) as txn:
        items = list(txn.cursor())
        for key, blob in items:
            blob = bytearray(blob)
            if how == "flip":
                blob[len(blob) // 2] ^= 0xFF
            elif how == "truncate":
                blob = blob[: len(blob) - 100]
            elif how == "version":
                blob[4:6] = struct.pack("<H", 999)
            txn.put(key, bytes(blob))
    env.close()
    return len(items)


@pytest.mark.parametrize("how", ["flip", "truncate", "version"])
def test_corrupt_entries_are_dropped_and_recomputed(tmp_path, tiny_model_dir, how):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir)) as cc:
        ref = cc.answer(QUESTION, PASSAGES, mode="reuse", max_new_tokens=6)
    assert _mutate_all(tmp_path / "kv", how) == len(PASSAGES)
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir)) as cc:
        ans = cc.answer(QUESTION, PASSAGES, mode="reuse", max_new_tokens=6)
        assert ans.token_ids == ref.token_ids  # the correct answer, from recomputed caches
        assert [p.hit for p in ans.passages] == [False] * len(PASSAGES)
        assert cc.stats().corrupt == len(PASSAGES)
        again = cc.answer(QUESTION, PASSAGES, mode="reuse", max_new_tokens=6)
        assert [p.hit for p in again.passages] == [True] * len(PASSAGES)


def test_a_crash_during_warm_up_loses_nothing_already_written(tmp_path, tiny_model_dir):
    passages = [f"Note number {i}: the lamp in room {i} was repaired on day {i * 3}." for i in range(12)]
    script = textwrap.dedent(
        f"""
        import os, sys
        from chunkcache import ChunkCache
        cc = ChunkCache(store_dir={str(tmp_path)!r}, model={str(tiny_model_dir)!r}, warm_batch_tokens=40)
        def crash(done, total):
            if done >= 4:
                os._exit(17)  # dies right after a committed batch, mid warm-up, no clean-up
        cc.warm({passages!r}, on_progress=crash)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 17, proc.stderr[-2000:]
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir), warm_batch_tokens=40) as cc:
        stored = sum(cc.store.contains(cc.chunks.key(cc.prompt.passage_ids(cc_p))) for cc_p in map(_as_passage, passages))
        assert 4 <= stored < len(passages)
        assert cc.warm(passages) == len(passages) - stored  # resumes: only the rest is computed
        assert cc.stats().corrupt == 0


def _as_passage(text):
    from chunkcache.prompt import Passage

    return Passage(text)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_warm_verify_repairs_corrupt_entries_that_plain_warm_trusts(tmp_path, tiny_model_dir, how):
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir)) as cc:
        assert cc.warm(PASSAGES) == len(PASSAGES)
        ref = cc.answer(QUESTION, PASSAGES, mode="reuse", max_new_tokens=6)
    _mutate_all(tmp_path / "kv", how)
    with ChunkCache(store_dir=str(tmp_path), model=str(tiny_model_dir)) as cc:
        assert cc.warm(PASSAGES) == 0  # existence only: the corrupt entries look stored
        assert cc.warm(PASSAGES, verify=True) == len(PASSAGES)
        assert cc.stats().corrupt == len(PASSAGES)
        assert cc.warm(PASSAGES, verify=True) == 0  # repaired entries now verify
        ans = cc.answer(QUESTION, PASSAGES, mode="reuse", max_new_tokens=6)
        assert [p.hit for p in ans.passages] == [True] * len(PASSAGES)
        assert ans.token_ids == ref.token_ids
