"""Documents behind a ChunkCache: the corpus in `store_dir/corpus`, its CRUD, its chunks' KV, retrieval."""

from collections.abc import Callable, Iterable
from pathlib import Path

from chunkcache.chunk_store import ChunkStore
from chunkcache.errors import InvalidRequestError
from chunkcache.locked_corpus import LockedCorpus
from chunkcache.names import DEFAULT_ORDER, MAX_TOP_K
from chunkcache.prompt import Passage, PromptBuilder


class DocumentService:
    """Adds, deletes and finds documents; keeps their chunks' stored KV in step with the index.

    The corpus is opened on first use and guarded by its own reader-writer lock, never by the
    model lock (see `locked_corpus.py`): retrieval and document reads run while the model works.
    """

    def __init__(self, corpus_dir: Path, tokenizer, prompt: PromptBuilder, chunks: ChunkStore):
        self._prompt = prompt
        self._chunks = chunks
        self._corpus = LockedCorpus(lambda: _open_corpus(corpus_dir, tokenizer))

    @property
    def corpus(self):
        """The persistent document index (a retrieval.Corpus, opened on first use). Unguarded:
        for single-threaded callers (the CLI); threads go through the methods below."""
        return self._corpus.corpus

    def add(self, docs: Iterable, progress: bool = False) -> list[str]:
        return list(self._corpus.ingest(docs, progress=progress).doc_ids)

    def delete(self, doc_id: str) -> list[str]:
        freed = self._corpus.delete_document(doc_id)
        # Only the freed chunks are tokenized again (their key needs the prompt tokens under this
        # model, prefix and codec, which the corpus does not know): no scan of the corpus.
        self._chunks.delete([self._chunks.key(self._prompt.passage_ids(Passage(c.text, c.title))) for c in freed])
        return [c.digest for c in freed]

    def get(self, doc_id: str):
        return self._corpus.get_document(doc_id)

    def list(self, offset: int = 0, limit: int = 100):
        return self._corpus.list_documents(offset, limit)

    def counts(self) -> tuple[int, int]:
        """(documents, distinct indexed chunks), read together."""
        return self._corpus.counts()

    def warm(self, progress: bool = False, on_progress: Callable[[int, int], None] | None = None, verify: bool = False) -> int:
        records = self._corpus.chunks()  # a snapshot; the corpus lock is released before model work
        ids = [self._prompt.passage_ids(Passage(r.text, r.title)) for r in records]
        return self._chunks.warm(ids, progress=progress, desc="warm corpus", on_progress=on_progress, verify=verify)

    def retrieve(self, question: str, top_k: int = 5, order: str = DEFAULT_ORDER):
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise InvalidRequestError(f"top_k must be an integer in [1, {MAX_TOP_K}], got {top_k!r}")
        return self._corpus.search(question, top_k=top_k, order=order)

    def close(self) -> None:
        self._corpus.close()


def _open_corpus(directory: Path, tokenizer):
    from chunkcache.retrieval import Corpus

    return Corpus(str(directory), tokenizer)
