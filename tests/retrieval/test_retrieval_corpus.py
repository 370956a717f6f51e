"""Corpus bookkeeping with a fake tokenizer and embedder: add, replace, delete, dedup,
validation, persistence and crash recovery."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from chunkcache.errors import ConfigError, InvalidRequestError, NotFoundError
from chunkcache.retrieval import (
    ChunkerConfig,
    Corpus,
    CorpusConfig,
    Document,
    IndexConfig,
    content_digest,
)
from retrieval_fakes import HashEmbedder, RegexTokenizer

SHARED = "Shared boilerplate paragraph about licensing terms and conditions."
DOCS = [
    Document("apple", "Apples grow on trees in orchards.\n\n" + SHARED, title="Apples"),
    Document("boat", "Boats float on water and carry cargo.\n\n" + SHARED, title="Boats",
             metadata={"lang": "en"}),
    Document("cloud", "Clouds are made of tiny water droplets.", title="Clouds"),
]
SMALL = CorpusConfig(chunker=ChunkerConfig(max_tokens=24))


def open_corpus(path, config: CorpusConfig = SMALL, embedder=None) -> Corpus:
    return Corpus(str(path), RegexTokenizer(), embedder or HashEmbedder(), config)


def state(corpus: Corpus) -> tuple:
    return (len(corpus), corpus.num_chunks, [d.id for d in corpus.list_documents()])


def test_add_get_list_and_search(tmp_path):
    with open_corpus(tmp_path) as corpus:
        assert corpus.add_documents(DOCS) == ["apple", "boat", "cloud"]
        assert len(corpus) == 3
        assert corpus.num_chunks == 4  # the shared paragraph is indexed once
        assert corpus.get_document("boat") == DOCS[1]
        infos = corpus.list_documents(offset=1, limit=1)
        assert [(i.id, i.title, i.n_chunks, i.metadata) for i in infos] == [("boat", "Boats", 2, {"lang": "en"})]
        hits = corpus.search("orchards trees apples", top_k=2)
        assert hits[0].doc_id == "apple" and hits[0].ordinal == 0 and hits[0].title == "Apples"
        assert hits[0].content_digest == content_digest(hits[0].text)
        assert hits[0].score >= hits[1].score


def test_identical_chunks_are_stored_once_and_reference_counted(tmp_path):
    with open_corpus(tmp_path) as corpus:
        corpus.add_documents(DOCS)
        shared = content_digest(SHARED)
        records = list(corpus.iter_chunks())
        assert len(records) == 4 and sum(r.content_digest == shared for r in records) == 1
        assert corpus.delete_document("apple") == [content_digest("Apples grow on trees in orchards.")]
        assert corpus.num_chunks == 3
        hit = next(h for h in corpus.search(SHARED, top_k=3) if h.content_digest == shared)
        assert (hit.doc_id, hit.ordinal) == ("boat", 1)  # still served, now by its other owner
        assert sorted(corpus.delete_document("boat")) == sorted(
            [shared, content_digest("Boats float on water and carry cargo.")])
        assert state(corpus) == (1, 1, ["cloud"])


def test_readding_an_id_replaces_its_chunks(tmp_path):
    with open_corpus(tmp_path) as corpus:
        corpus.add_documents(DOCS)
        report = corpus.ingest([Document("cloud", "Clouds turn into rain over the mountains.")])
        assert report.freed_digests == (content_digest(DOCS[2].text),)
        assert report.new_digests == (content_digest("Clouds turn into rain over the mountains."),)
        assert state(corpus) == (3, 4, ["apple", "boat", "cloud"])
        assert corpus.get_document("cloud").title == ""
        assert all("droplets" not in h.text for h in corpus.search("droplets", top_k=4))
        # Re-adding identical content neither frees nor embeds anything.
        again = corpus.ingest([DOCS[0]])
        assert again.new_digests == () and again.freed_digests == ()


def test_embeddings_use_the_title_and_are_computed_once_per_text(tmp_path):
    embedder = HashEmbedder()
    with open_corpus(tmp_path, embedder=embedder) as corpus:
        corpus.add_documents(DOCS)
    assert embedder.seen[:3] == ["Apples: Apples grow on trees in orchards.", f"Apples: {SHARED}",
                                 "Boats: Boats float on water and carry cargo."]
    assert len(embedder.seen) == 4


@pytest.mark.parametrize(
    "batch, message",
    [([DOCS[0], Document("empty", "  \n")], r"documents\[1\] \(id 'empty'\): text is empty"),
     ([DOCS[0], DOCS[0]], r"duplicate id, also at documents\[0\]"),
     ([{"text": "no id"}], r"documents\[0\]: missing \['id'\]"),
     ([{"id": "x", "text": 3}], "text must be a str, got int"),
     ([{"id": "x", "text": "t", "colour": "red"}], r"unknown keys \['colour'\]"),
     ([Document("x", "t", metadata={"f": {1, 2}})], "not JSON-serialisable"),
     (["just a string"], "must be a Document or a dict, got str")],
)
def test_bad_batches_leave_the_corpus_unchanged(tmp_path, batch, message):
    embedder = HashEmbedder()
    with open_corpus(tmp_path, embedder=embedder) as corpus:
        corpus.add_documents(DOCS)
        before, n_embedded = state(corpus), len(embedder.seen)
        with pytest.raises(InvalidRequestError, match=message):
            corpus.add_documents(batch)
        assert state(corpus) == before and len(embedder.seen) == n_embedded


def test_unknown_ids_and_bad_requests(tmp_path):
    with open_corpus(tmp_path) as corpus:
        corpus.add_documents(DOCS)
        before = state(corpus)
        with pytest.raises(NotFoundError, match="no document with id 'nope'"):
            corpus.delete_document("nope")
        with pytest.raises(NotFoundError, match="no document with id ''"):
            corpus.get_document("")
        with pytest.raises(InvalidRequestError, match="query must be a non-empty str"):
            corpus.search("   ")
        with pytest.raises(InvalidRequestError, match="top_k must be an int >= 1, got 0"):
            corpus.search("water", top_k=0)
        with pytest.raises(InvalidRequestError, match="order must be one of"):
            corpus.search("water", order="random")
        assert state(corpus) == before
    with pytest.raises(InvalidRequestError, match="is closed"):
        corpus.search("water")


def test_document_order_resorts_hits(tmp_path):
    with open_corpus(tmp_path) as corpus:
        corpus.add_documents(DOCS)
        hits = corpus.search("water boats clouds apples", top_k=4, order="document")
        assert [(h.doc_id, h.ordinal) for h in hits] == sorted((h.doc_id, h.ordinal) for h in hits)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
@pytest.mark.parametrize("retrieval", ["dense", "hybrid"])
def test_reopening_gives_identical_results(tmp_path, kind, retrieval):
    config = CorpusConfig(chunker=ChunkerConfig(max_tokens=24), index=IndexConfig(kind=kind),
                          retrieval=retrieval)
    queries = ["water", "trees in orchards", "licensing", "rain droplets"]
    with open_corpus(tmp_path, config) as corpus:
        corpus.add_documents(DOCS)
        corpus.delete_document("apple")
        before = [corpus.search(q, top_k=3) for q in queries]
    assert sorted(os.listdir(tmp_path)) == ["docs.lmdb", "vectors.faiss"]
    with open_corpus(tmp_path, config) as corpus:
        assert [corpus.search(q, top_k=3) for q in queries] == before
        assert state(corpus) == (2, 3, ["boat", "cloud"])


def test_settings_are_checked_and_index_kind_may_change(tmp_path):
    with open_corpus(tmp_path) as corpus:
        corpus.add_documents(DOCS)
    with pytest.raises(ConfigError, match="chunker: directory has .*'max_tokens': 24.*asked for"):
        open_corpus(tmp_path, CorpusConfig(chunker=ChunkerConfig(max_tokens=64)))
    with pytest.raises(ConfigError, match="embedder: directory has 'hash-embedder/64d'"):
        open_corpus(tmp_path, embedder=HashEmbedder(dim=32))
    hnsw = CorpusConfig(chunker=ChunkerConfig(max_tokens=24), index=IndexConfig(kind="hnsw"))
    with open_corpus(tmp_path, hnsw) as corpus:  # the index is rebuilt from stored vectors
        assert corpus.num_chunks == 4 and corpus.search("cargo boats")[0].doc_id == "boat"


def test_an_unclosed_corpus_rebuilds_its_index_on_reopen(tmp_path):
    """A process that dies after writing documents but before saving the index."""
    here = os.path.dirname(__file__)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {here!r})
        from retrieval_fakes import HashEmbedder, RegexTokenizer
        from chunkcache.retrieval import ChunkerConfig, Corpus, CorpusConfig, Document
        config = CorpusConfig(chunker=ChunkerConfig(max_tokens=24))
        c = Corpus({str(tmp_path)!r}, RegexTokenizer(), HashEmbedder(), config)
        c.add_documents([Document("a", "first text")])
        c.flush()
        c.add_documents([Document("b", "second text about cargo boats")])
        os._exit(0)  # no close(): the index file still holds only "a"
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    with open_corpus(tmp_path) as corpus:
        assert corpus.num_chunks == 2 and corpus.search("cargo boats")[0].doc_id == "b"
