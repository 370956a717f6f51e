"""`LockedCorpus`: the one way a ChunkCache touches its corpus from several threads.

Concurrency model of a ChunkCache (one instance shared by the service's threads):
- the model (engine, generator, working caches) is guarded by the model lock: one request's
  model work at a time (or the scheduler that owns the model);
- the corpus (docstore, FAISS index, BM25) is guarded by this reader-writer lock, separate from
  the model lock: searches, document reads, listings and chunk listings are readers and run
  together, and while the model works; ingest, delete and flush are writers and run alone;
- the KV store is thread-safe on its own (each tier locks itself) and needs neither lock.
No thread takes the model lock while it holds the corpus lock (or the other way round), so the
two cannot deadlock; readers get lists, never live iterators, so no lock outlives a call.
Writers embed new chunks while they hold the lock, so searches wait for an ingest's embedding.
"""

import threading
from collections.abc import Callable, Iterable

from chunkcache.rwlock import ReadWriteLock


class LockedCorpus:
    """A retrieval.Corpus behind a ReadWriteLock, opened on first use by `open_corpus`."""

    def __init__(self, open_corpus: Callable[[], object]) -> None:
        self._open_corpus = open_corpus
        self._open_lock = threading.Lock()
        self._lock = ReadWriteLock()
        self._corpus = None

    @property
    def corpus(self):
        """The Corpus itself (opened now if needed), for single-threaded callers such as the CLI."""
        with self._open_lock:
            if self._corpus is None:
                self._corpus = self._open_corpus()
            return self._corpus

    # -- readers ------------------------------------------------------------------------------
    def search(self, query: str, top_k: int, order: str):
        corpus = self.corpus
        with self._lock.read():
            return corpus.search(query, top_k=top_k, order=order)

    def get_document(self, doc_id: str):
        corpus = self.corpus
        with self._lock.read():
            return corpus.get_document(doc_id)

    def list_documents(self, offset: int, limit: int):
        corpus = self.corpus
        with self._lock.read():
            return corpus.list_documents(offset, limit)

    def chunks(self) -> list:
        """Every distinct indexed chunk (retrieval.ChunkRecord), as one consistent snapshot."""
        corpus = self.corpus
        with self._lock.read():
            return list(corpus.iter_chunks())

    def counts(self) -> tuple[int, int]:
        """(documents, distinct chunks), read together."""
        corpus = self.corpus
        with self._lock.read():
            return len(corpus), corpus.num_chunks

    # -- writers ------------------------------------------------------------------------------
    def ingest(self, docs: Iterable, progress: bool = False):
        """Add or replace documents and write the index; -> retrieval.IngestReport."""
        corpus = self.corpus
        with self._lock.write():
            report = corpus.ingest(docs, progress=progress)
            corpus.flush()
        return report

    def delete_document(self, doc_id: str) -> tuple:
        """Delete a document and write the index; -> the chunks no document references any more
        (retrieval StoredChunk: text, title, digest), so the caller can drop their KV."""
        corpus = self.corpus
        with self._lock.write():
            freed = corpus.remove_document(doc_id)
            corpus.flush()
        return freed

    def close(self) -> None:
        with self._open_lock, self._lock.write():
            if self._corpus is not None:
                self._corpus.close()
                self._corpus = None
