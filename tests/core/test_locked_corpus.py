"""LockedCorpus under threads: a real MiniLM embedder, a real FAISS index and the default
model's tokenizer (no LLM). Writers add and delete while readers search, list, get and count;
the invariants hold at every step and nothing raises."""

import random
import threading
from pathlib import Path

import pytest

from chunkcache.errors import NotFoundError
from chunkcache.locked_corpus import LockedCorpus

STABLE = 8
WRITERS, ROUNDS = 2, 12
READERS = 3


@pytest.fixture(scope="module")
def open_corpus(tiny_model_dir):
    from transformers import AutoTokenizer

    from chunkcache.retrieval import Corpus, Embedder

    tokenizer, embedder = AutoTokenizer.from_pretrained(tiny_model_dir), Embedder()
    return lambda directory: (lambda: Corpus(str(directory), tokenizer, embedder))


@pytest.fixture(autouse=True)
def _one_thread(one_blas_thread):
    yield


def doc(doc_id: str, word: str) -> dict:
    return {"id": doc_id, "title": f"Note {doc_id}",
            "text": f"The keeper {word} of this note writes about rivers, bridges and the weather in spring. {word} signs it."}


def word(doc_id: str) -> str:
    return "zq" + doc_id.replace("-", "x")  # one unique word per document, found by BM25


def test_threads_hammering_add_delete_query_list_keep_invariants(tmp_path: Path, open_corpus):
    corpus = LockedCorpus(open_corpus(tmp_path / "corpus"))
    corpus.ingest([doc(f"s{i}", word(f"s{i}")) for i in range(STABLE)])
    deleted: set[str] = set()  # ids whose delete_document has returned
    live: set[str] = {f"s{i}" for i in range(STABLE)}
    book = threading.Lock()
    errors: list[BaseException] = []
    writers_done = threading.Event()
    checks = {"search": 0, "list": 0, "get": 0, "count": 0, "chunks": 0}

    def writer(t: int) -> None:
        rng = random.Random(t)
        mine: list[str] = []
        for i in range(ROUNDS):
            doc_id = f"w{t}-{i}"
            corpus.ingest([doc(doc_id, word(doc_id))])
            with book:
                live.add(doc_id)
            mine.append(doc_id)
            if rng.random() < 0.6:
                victim = mine.pop(rng.randrange(len(mine)))
                with book:
                    live.discard(victim)  # readers may see it until delete returns, never after
                corpus.delete_document(victim)
                with book:
                    deleted.add(victim)

    def reader(r: int) -> None:
        rng = random.Random(100 + r)
        while not writers_done.is_set() or checks["search"] < 30:
            with book:
                gone = set(deleted)  # deleted before this call started
                candidates = sorted(gone | live)
            target = rng.choice(candidates)
            op = rng.randrange(4)
            if op == 0:
                hits = corpus.search(f"{word(target)} rivers", top_k=5, order="score")
                assert not {h.doc_id for h in hits} & gone, f"search returned a deleted document: {hits}"
                checks["search"] += 1
            elif op == 1:
                listed = [d.id for d in corpus.list_documents(0, 10_000)]
                assert len(listed) == len(set(listed)) and not set(listed) & gone
                assert {f"s{i}" for i in range(STABLE)} <= set(listed)
                for doc_id in rng.sample(listed, min(3, len(listed))):
                    try:
                        got = corpus.get_document(doc_id)
                        assert got.id == doc_id and word(doc_id) in got.text
                    except NotFoundError:
                        with book:
                            assert doc_id in deleted or doc_id not in live, f"listed {doc_id} is not gettable"
                    checks["get"] += 1
                checks["list"] += 1
            elif op == 2:
                documents, chunks = corpus.counts()
                assert documents >= STABLE and chunks >= documents  # unique text: one chunk per document at least
                checks["count"] += 1
            else:
                records = corpus.chunks()
                assert not {rec.doc_id for rec in records} & gone
                checks["chunks"] += 1

    def run(fn, arg):
        try:
            fn(arg)
        except BaseException as e:  # reported below, with the thread's traceback
            errors.append(e)
            writers_done.set()

    writers = [threading.Thread(target=run, args=(writer, t)) for t in range(WRITERS)]
    readers = [threading.Thread(target=run, args=(reader, r)) for r in range(READERS)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(600)
    writers_done.set()
    for t in readers:
        t.join(600)
    if errors:
        raise errors[0]
    assert all(checks[k] > 0 for k in checks), checks

    # Quiescent: exactly the live documents remain, each gettable and findable; no deleted one is.
    listed = {d.id for d in corpus.list_documents(0, 10_000)}
    assert listed == live and corpus.counts()[0] == len(live)
    assert {rec.doc_id for rec in corpus.chunks()} == live
    for doc_id in live:
        assert corpus.get_document(doc_id).id == doc_id
        assert corpus.search(word(doc_id), top_k=1, order="score")[0].doc_id == doc_id
    for doc_id in deleted:
        with pytest.raises(NotFoundError):
            corpus.get_document(doc_id)
        assert doc_id not in {h.doc_id for h in corpus.search(word(doc_id), top_k=5, order="score")}
    corpus.close()


def test_retrieval_and_document_reads_run_while_the_model_works(tmp_path, tiny_model_dir):
    """The corpus lock is not the model lock: with the model busy (its lock held, as during a
    generation), search, get, list and counts still answer; a document write does too."""
    from chunkcache.config import CacheConfig
    from chunkcache.facade import ChunkCache

    cc = ChunkCache(config=CacheConfig(store_dir=str(tmp_path), model=str(tiny_model_dir)))
    cc.add_documents([doc("a", word("a")), doc("b", word("b"))])
    results = {}

    def reads():
        results["hits"] = [h.doc_id for h in cc.retrieve(word("b"), top_k=1)]
        results["doc"] = cc.get_document("a").id
        results["listed"] = [d.id for d in cc.list_documents()]
        cc.add_documents([doc("c", word("c"))])
        results["deleted"] = cc.delete_document("a") is not None
        results["counts"] = cc._documents.counts()

    with cc._lock:  # the model lock, held as a generation holds it
        t = threading.Thread(target=reads)
        t.start()
        t.join(120)
        assert not t.is_alive(), "corpus calls waited for the model lock"
    assert results == {"hits": ["b"], "doc": "a", "listed": ["a", "b"], "deleted": True, "counts": (2, 2)}
    cc.close()
