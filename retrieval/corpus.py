"""A persistent, searchable collection of documents: chunker + embedder + index + docstore.

Layout of ``directory``: ``docs.lmdb/`` (the docstore, source of truth: documents, distinct
chunks, their embeddings) and ``vectors.faiss`` (the vector index, derived). The index is
written by ``flush``/``close``, not after every change; the docstore counts its write
transactions (``generation``) and records which generation the index file matches, so a
corpus that was not closed (a crash, a killed process) rebuilds its index from the stored
vectors when reopened instead of serving a stale one. BM25 (hybrid retrieval) is in-memory
and rebuilt from the stored chunks on open.

Identical chunk text in several documents is stored, embedded and indexed once (keyed by its
sha256 ``content_digest``; the KV-cache key is not this but the chunk's prompt tokens under a model,
prefix and codec, see ``chunkcache.storage.keys``), embedded with the title of the
document that brought it in first, and attributed in results to the oldest document still
holding it. One process at a time may open a directory, and a Corpus object is not
thread-safe: callers serialise access (one lock around it is enough).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from chunkcache.errors import ConfigError, InvalidRequestError, NotFoundError, StorageError, check_int
from chunkcache.names import DEFAULT_ORDER, ORDERS
from chunkcache.retrieval.bm25 import BM25Index, reciprocal_rank_fusion
from chunkcache.retrieval.chunker import Chunk, ChunkerConfig, Tokenizer, chunk_document
from chunkcache.retrieval.docstore import ChangeSet, DocStore, StoredChunk, content_digest
from chunkcache.retrieval.documents import (
    ChunkHit,
    ChunkRecord,
    Document,
    DocumentInfo,
    MAX_ID_BYTES,
    IngestReport,
    validate_documents,
)
from chunkcache.retrieval.embedder import Embedder
from chunkcache.retrieval.index import IndexConfig, VectorIndex

log = logging.getLogger(__name__)

RETRIEVAL_MODES = ("hybrid", "dense", "bm25")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CorpusConfig:
    """``chunker`` and ``title_in_embedding`` are fixed when a directory is first built
    (ConfigError if reopened with others); the rest may change between opens.

    ``retrieval``: ``"hybrid"`` fuses MiniLM and BM25 rankings (top ``candidates`` of each)
    by reciprocal-rank fusion with constant ``rrf_k``; ``"dense"`` is MiniLM alone;
    ``"bm25"`` is lexical alone. ``title_in_embedding`` embeds and BM25-indexes
    ``"<title>: <chunk text>"`` (the chunk text alone when the title is empty).

    Why the defaults (``scripts/bench_retrieval.py``, recall@5 of supporting passages,
    dense MiniLM without titles -> hybrid with titles): 2WikiMultihopQA first 200
    0.613 -> 0.645, next 200 0.618 -> 0.667, HotpotQA 0.790 -> 0.815, MuSiQue 0.553 -> 0.582.
    ``rrf_k=60`` and BM25's k1=1.2, b=0.75 are the textbook values, left untuned.
    """

    chunker: ChunkerConfig = field(default_factory=ChunkerConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: str = "hybrid"
    title_in_embedding: bool = True
    candidates: int = 50
    rrf_k: int = 60
    map_size: int = 4 << 30  # LMDB address space; sparse on disk

    def __post_init__(self) -> None:
        if self.retrieval not in RETRIEVAL_MODES:
            raise ConfigError(f"retrieval must be one of {RETRIEVAL_MODES}, got {self.retrieval!r}")
        for name in ("candidates", "rrf_k", "map_size"):
            check_int(name, getattr(self, name), 1)
        if not isinstance(self.title_in_embedding, bool):
            raise ConfigError(f"title_in_embedding must be a bool, got {self.title_in_embedding!r}")


class Corpus:
    """Documents in ``directory``, chunked with the generator's ``tokenizer``."""

    INDEX_FILE = "vectors.faiss"
    DOCSTORE_DIR = "docs.lmdb"

    def __init__(
        self,
        directory: str,
        tokenizer: Tokenizer,
        embedder: Embedder | None = None,
        config: CorpusConfig = CorpusConfig(),
    ):
        self.directory = directory
        self.config = config
        self._tokenizer = tokenizer
        self._embedder = embedder if embedder is not None else Embedder()
        os.makedirs(directory, exist_ok=True)
        self._store = DocStore(os.path.join(directory, self.DOCSTORE_DIR), config.map_size)
        self._closed = False
        try:
            self._check_settings()
            self._dirty = False
            self._index = self._open_index()
            self._bm25 = self._build_bm25() if config.retrieval != "dense" else None
        except BaseException:
            self._store.close()
            raise

    # ----- writing -----------------------------------------------------------------------
    def add_documents(
        self, docs: Iterable[Document | dict[str, Any]], progress: bool = False
    ) -> list[str]:
        """Add or replace documents; returns their ids. See ``ingest``."""
        return list(self.ingest(docs, progress=progress).doc_ids)

    def ingest(
        self, docs: Iterable[Document | dict[str, Any]], progress: bool = False
    ) -> IngestReport:
        """Add documents (an existing id is replaced: its old chunks are released).

        Everything is validated and chunked before anything is written, so a bad document
        (InvalidRequestError naming it) leaves the corpus unchanged. New chunk texts are
        embedded in batches (tqdm bars when ``progress``), then written in one transaction.
        """
        self._check_open()
        valid = validate_documents(docs)
        chunked: list[tuple[Document, list[Chunk]]] = [
            (doc, chunk_document(doc.id, doc.text, self._tokenizer, self.config.chunker))
            for doc in tqdm(valid, desc="chunking", unit="doc", disable=not progress)
        ]
        inputs: dict[str, str] = {}  # digest -> embedding input, first occurrence wins
        for doc, chunks in chunked:
            for chunk in chunks:
                digest = content_digest(chunk.text)
                inputs.setdefault(digest, self._embedding_input(doc.title, chunk.text))
        missing = self._store.missing_digests(list(inputs))
        todo = [d for d in inputs if d in missing]
        vectors = self._embedder.encode([inputs[d] for d in todo], progress=progress)  # [n, dim]
        change = self._store.apply(chunked, [], dict(zip(todo, vectors)))
        self._apply(change)
        return IngestReport(
            doc_ids=tuple(doc.id for doc in valid),
            n_chunks=sum(len(chunks) for _, chunks in chunked),
            new_digests=tuple(c.digest for c in change.added),
            freed_digests=change.freed_digests,
        )

    def delete_document(self, doc_id: str) -> list[str]:
        """Delete a document; returns the content digests no document references any more."""
        return [c.digest for c in self.remove_document(doc_id)]

    def remove_document(self, doc_id: str) -> tuple[StoredChunk, ...]:
        """Delete a document; returns the chunks no document references any more, straight from
        the delete transaction: what a caller needs to drop their KV. Their title is the deleted
        document's (their last owner), as search results and ``iter_chunks`` attributed them."""
        self._check_open()
        title = self._require_document(doc_id).title
        change = self._store.apply([], [doc_id], {})
        self._apply(change)
        return tuple(replace(c, title=title) for c in change.freed)

    # ----- reading -----------------------------------------------------------------------
    def get_document(self, doc_id: str) -> Document:
        self._check_open()
        stored = self._require_document(doc_id)
        return Document(stored.id, stored.text, stored.title, stored.metadata)

    def list_documents(self, offset: int = 0, limit: int = 100) -> list[DocumentInfo]:
        """Documents in id order (UTF-8 byte order)."""
        self._check_open()
        for name, value, low in (("offset", offset, 0), ("limit", limit, 1)):
            check_int(name, value, low, error=InvalidRequestError)
        return [
            DocumentInfo(id=d.id, title=d.title, n_chars=len(d.text), n_chunks=len(d.chunks),
                         metadata=d.metadata)
            for d in self._store.list_documents(offset, limit)
        ]

    def __len__(self) -> int:
        """Number of documents."""
        self._check_open()
        return self._store.count_documents()

    @property
    def num_chunks(self) -> int:
        """Number of distinct indexed chunks (shared chunk text counts once)."""
        self._check_open()
        return len(self._index)

    def search(self, query: str, top_k: int = 5, order: str = DEFAULT_ORDER) -> list[ChunkHit]:
        """The ``top_k`` best chunks for ``query``, best first (``order="score"``) or
        re-sorted by ``(doc_id, ordinal)`` (``order="document"``)."""
        self._check_open()
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError(f"query must be a non-empty str, got {query!r}")
        check_int("top_k", top_k, 1, error=InvalidRequestError)
        if order not in ORDERS:
            raise InvalidRequestError(f"order must be one of {ORDERS}, got {order!r}")
        ranked = self._rank(query, top_k)
        hits = self._hits(ranked)
        if order == "document":
            hits.sort(key=lambda h: (h.doc_id, h.ordinal))
        return hits

    def iter_chunks(self) -> Iterator[ChunkRecord]:
        """Every distinct indexed chunk once, in chunk-id order (for KV warm-up)."""
        self._check_open()
        titles: dict[str, str] = {}
        for chunk in self._store.iter_chunks():
            doc_id, ordinal = chunk.owners[0]
            if doc_id not in titles:
                if len(titles) > 4096:
                    titles.clear()
                stored = self._store.get_document(doc_id)
                titles[doc_id] = stored.title if stored is not None else ""
            yield ChunkRecord(chunk.chunk_id, doc_id, ordinal, chunk.text, titles[doc_id],
                              chunk.digest, chunk.n_tokens)

    # ----- lifecycle ---------------------------------------------------------------------
    def flush(self) -> bool:
        """Write the vector index if it changed since it was last written; True if it is on disk.

        The index file is derived from the docstore, whose write already committed the change.
        So a failed index write (a full disk) is logged, not raised: the change stays made, the
        index stays dirty for the next flush, and an open that finds a stale file rebuilds it
        from the stored vectors.
        """
        self._check_open()
        if not self._dirty:
            return True
        try:
            self._index.save(os.path.join(self.directory, self.INDEX_FILE))
            self._store.set_meta({"index_generation": self._store.meta().get("generation", 0)})
        except StorageError as exc:
            log.warning("vector index not saved (the documents are stored; it is rebuilt on the next open "
                        "or written by the next flush): %s", exc)
            return False
        self._dirty = False
        return True

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._store.close()
            self._closed = True

    def __enter__(self) -> "Corpus":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----- internals ---------------------------------------------------------------------
    def _rank(self, query: str, top_k: int) -> list[tuple[int, float]]:
        mode = self.config.retrieval
        pool = top_k if mode == "dense" else max(top_k, self.config.candidates)
        dense: list[tuple[int, float]] = []
        if mode != "bm25":
            scores, ids = self._index.search(self._embedder.encode([query]), pool)  # [1, pool]
            dense = [(int(i), float(s)) for s, i in zip(scores[0], ids[0]) if i >= 0]
        if mode == "dense":
            return dense[:top_k]
        assert self._bm25 is not None  # built whenever retrieval != "dense"
        lexical = self._bm25.search(query, pool)
        if mode == "bm25":
            return lexical[:top_k]
        fused = reciprocal_rank_fusion([[i for i, _ in dense], [i for i, _ in lexical]],
                                       k=self.config.rrf_k)
        return fused[:top_k]

    def _hits(self, ranked: list[tuple[int, float]]) -> list[ChunkHit]:
        chunks = self._store.get_chunks([cid for cid, _ in ranked])
        docs = self._store.get_documents([c.owners[0][0] for c in chunks.values()])
        hits = []
        for cid, score in ranked:
            chunk = chunks[cid]
            doc_id, ordinal = chunk.owners[0]
            title = docs[doc_id].title if doc_id in docs else ""
            hits.append(ChunkHit(cid, doc_id, ordinal, chunk.text, title, score, chunk.digest,
                                 chunk.n_tokens))
        return hits

    def _apply(self, change: ChangeSet) -> None:
        if change.removed_ids:
            self._index.remove(np.array(change.removed_ids, dtype=np.int64))
            for cid in change.removed_ids:
                if self._bm25 is not None:
                    self._bm25.remove(cid)
        if change.added:
            ids = np.array([c.chunk_id for c in change.added], dtype=np.int64)
            self._index.add(ids, change.added_vectors)
            if self._bm25 is not None:
                self._bm25.add_many((c.chunk_id, self._lexical_text(c)) for c in change.added)
        self._dirty = self._dirty or bool(change.removed_ids or change.added)

    def _embedding_input(self, title: str, text: str) -> str:
        return f"{title}: {text}" if self.config.title_in_embedding and title else text

    def _lexical_text(self, chunk: StoredChunk) -> str:
        return self._embedding_input(chunk.title, chunk.text)

    def _check_settings(self) -> None:
        """Record the build settings in a new directory, or check them in an existing one."""
        wanted = {
            "schema": SCHEMA_VERSION,
            "embedder": self._embedder.fingerprint,
            "dim": self._embedder.dim,
            "chunker": asdict(self.config.chunker),
            "title_in_embedding": self.config.title_in_embedding,
        }
        stored = self._store.meta().get("settings")
        if stored is None:
            self._store.set_meta({"settings": wanted})
            return
        diff = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
        if diff:
            detail = "; ".join(
                f"{k}: directory has {a!r}, asked for {b!r}" for k, (a, b) in diff.items()
            )
            raise ConfigError(f"corpus {self.directory!r} was built with other settings: {detail}")

    def _open_index(self) -> VectorIndex:
        meta = self._store.meta()
        path = os.path.join(self.directory, self.INDEX_FILE)
        fresh = meta.get("index_generation") == meta.get("generation", 0)
        if fresh and os.path.exists(path):
            try:
                index = VectorIndex.load(path, self.config.index)
            except ConfigError:  # another index kind asked for: rebuild below
                index = None
            if (index is not None and index.dim == self._embedder.dim
                    and len(index) == self._store.count_chunks()):
                return index
        index = VectorIndex(self._embedder.dim, self.config.index)
        for ids, vectors in self._store.iter_vectors(self._embedder.dim):
            index.add(ids, vectors)
        self._dirty = True
        return index

    def _build_bm25(self) -> BM25Index:
        bm25 = BM25Index()
        bm25.add_many((c.chunk_id, self._lexical_text(c)) for c in self._store.iter_chunks())
        return bm25

    def _require_document(self, doc_id: str) -> Any:
        if not isinstance(doc_id, str):
            raise InvalidRequestError(f"doc_id must be a str, got {type(doc_id).__name__}")
        valid_key = 0 < len(doc_id.encode("utf-8")) <= MAX_ID_BYTES
        stored = self._store.get_document(doc_id) if valid_key else None
        if stored is None:
            raise NotFoundError(f"no document with id {doc_id!r} in corpus {self.directory!r}")
        return stored

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidRequestError(f"corpus {self.directory!r} is closed")
