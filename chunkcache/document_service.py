"""Documents behind a ChunkCache: the corpus in `store_dir/corpus`, its CRUD, its chunks' KV, retrieval."""

import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from chunkcache.chunk_store import ChunkStore
from chunkcache.errors import InvalidRequestError
from chunkcache.prompt import Passage, PromptBuilder


class DocumentService:
    """Adds, deletes and finds documents; keeps their chunks' stored KV in step with the index.

    The corpus is opened on first use. Corpus changes take `lock` (the instance's one lock).
    """

    def __init__(self, corpus_dir: Path, tokenizer, prompt: PromptBuilder, chunks: ChunkStore, lock: threading.RLock):
        self._dir = corpus_dir
        self._tokenizer = tokenizer
        self._prompt = prompt
        self._chunks = chunks
        self._lock = lock
        self._corpus = None

    @property
    def corpus(self):
        """The persistent document index (a retrieval.Corpus, opened on first use)."""
        with self._lock:
            if self._corpus is None:
                from chunkcache.retrieval import Corpus

                self._corpus = Corpus(str(self._dir), self._tokenizer)
            return self._corpus

    def add(self, docs: Iterable, progress: bool = False) -> list[str]:
        with self._lock:
            report = self.corpus.ingest(docs, progress=progress)
            self.corpus.flush()
        return list(report.doc_ids)

    def delete(self, doc_id: str) -> list[str]:
        with self._lock:
            owned = {r.content_digest: r for r in self.corpus.iter_chunks() if r.doc_id == doc_id}
            freed = self.corpus.delete_document(doc_id)
            self.corpus.flush()
            keys = [self._chunks.key(self._prompt.passage_ids(Passage(owned[d].text, owned[d].title)))
                    for d in freed if d in owned]
            self._chunks.delete(keys)
        return freed

    def get(self, doc_id: str):
        return self.corpus.get_document(doc_id)

    def list(self, offset: int = 0, limit: int = 100):
        return self.corpus.list_documents(offset, limit)

    def warm(self, progress: bool = False, on_progress: Callable[[int, int], None] | None = None, verify: bool = False) -> int:
        records = list(self.corpus.iter_chunks())
        ids = [self._prompt.passage_ids(Passage(r.text, r.title)) for r in records]
        return self._chunks.warm(ids, progress=progress, desc="warm corpus", on_progress=on_progress, verify=verify)

    def retrieve(self, question: str, top_k: int = 5, order: str = "score"):
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 100:
            raise InvalidRequestError(f"top_k must be an integer in [1, 100], got {top_k!r}")
        return self.corpus.search(question, top_k=top_k, order=order)

    def close(self) -> None:
        with self._lock:
            if self._corpus is not None:
                self._corpus.close()
                self._corpus = None
