"""Documents, distinct chunks and their embeddings, persisted in one LMDB environment.

The docstore is the corpus's source of truth; the vector index and BM25 are derived from it.
Values are JSON (never pickle), except embeddings: raw float32 bytes ``[dim]``.

Sub-databases:

- ``docs``:    doc id (UTF-8) -> {id, title, text, metadata, chunks: [[chunk_id, start, end], ...]}
                                   (list position = ordinal)
- ``chunks``:  chunk id (8-byte big-endian) -> {text, digest, n_tokens, title,
                                   owners: [[doc_id, ordinal], ...]}
- ``digests``: sha256(chunk text) hex -> chunk id. Identical chunk text is stored once; its
               reference count is ``len(owners)``, and the chunk (digest, vector) is deleted
               when the count reaches zero.
- ``vectors``: chunk id -> float32 bytes, so the index can be rebuilt without re-embedding.
- ``meta``:    settings the directory was built with, id counter, generation counters.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Iterator

import lmdb
import numpy as np

from chunkcache.errors import InvalidRequestError, StorageError
from chunkcache.retrieval.chunker import Chunk
from chunkcache.retrieval.documents import Document

_DBS = (b"meta", b"docs", b"chunks", b"digests", b"vectors")


def content_digest(text: str) -> str:
    """sha256 hex of the chunk text: the KV-cache key of a chunk."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredDocument:
    id: str
    title: str
    text: str
    metadata: dict[str, Any]
    chunks: tuple[tuple[int, int, int], ...]  # (chunk_id, char_start, char_end) by ordinal


@dataclass(frozen=True)
class StoredChunk:
    chunk_id: int
    text: str
    digest: str
    n_tokens: int
    title: str  # title of the document that first brought this text in (embedding input)
    owners: tuple[tuple[str, int], ...]  # (doc_id, ordinal), oldest first


@dataclass(frozen=True)
class ChangeSet:
    """Index-relevant effect of one write transaction."""

    added: tuple[StoredChunk, ...]
    added_vectors: np.ndarray  # [len(added), dim] float32
    removed_ids: tuple[int, ...]
    freed: tuple[StoredChunk, ...]  # chunks no document references any more (owners empty)

    @property
    def freed_digests(self) -> tuple[str, ...]:
        return tuple(c.digest for c in self.freed)


class DocStore:
    """LMDB at ``path`` (a directory). One writer process at a time."""

    def __init__(self, path: str, map_size: int):
        os.makedirs(path, exist_ok=True)
        try:
            self._env = lmdb.open(path, max_dbs=len(_DBS), map_size=map_size, subdir=True)
        except lmdb.Error as exc:
            raise StorageError(f"cannot open docstore {path!r}: {exc}") from exc
        self.path = path
        self._db = {name.decode(): self._env.open_db(name) for name in _DBS}

    def close(self) -> None:
        self._env.close()

    # ----- meta --------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        with self._env.begin() as txn:
            return {k.decode(): json.loads(v) for k, v in txn.cursor(db=self._db["meta"])}

    def set_meta(self, values: dict[str, Any]) -> None:
        with self._write() as txn:
            for key, value in values.items():
                txn.put(key.encode(), _json(value), db=self._db["meta"])

    # ----- reads -------------------------------------------------------------------------
    def count_documents(self) -> int:
        with self._env.begin() as txn:
            return int(txn.stat(self._db["docs"])["entries"])

    def count_chunks(self) -> int:
        with self._env.begin() as txn:
            return int(txn.stat(self._db["chunks"])["entries"])

    def get_document(self, doc_id: str) -> StoredDocument | None:
        with self._env.begin() as txn:
            raw = txn.get(doc_id.encode(), db=self._db["docs"])
        return None if raw is None else _doc(json.loads(raw))

    def get_documents(self, doc_ids: list[str]) -> dict[str, StoredDocument]:
        with self._env.begin() as txn:
            raws = {d: txn.get(d.encode(), db=self._db["docs"]) for d in set(doc_ids)}
        return {d: _doc(json.loads(r)) for d, r in raws.items() if r is not None}

    def list_documents(self, offset: int, limit: int) -> list[StoredDocument]:
        """Documents in id order (UTF-8 byte order), ``offset``/``limit`` paged."""
        out: list[StoredDocument] = []
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._db["docs"])
            for i, (_, raw) in enumerate(cursor):
                if i >= offset + limit:
                    break
                if i >= offset:
                    out.append(_doc(json.loads(raw)))
        return out

    def get_chunks(self, chunk_ids: list[int]) -> dict[int, StoredChunk]:
        with self._env.begin() as txn:
            raws = {c: txn.get(_key(c), db=self._db["chunks"]) for c in set(chunk_ids)}
        return {c: _chunk(c, json.loads(r)) for c, r in raws.items() if r is not None}

    def missing_digests(self, digests: list[str]) -> set[str]:
        """Those of ``digests`` that no stored chunk has."""
        with self._env.begin() as txn:
            return {d for d in set(digests) if txn.get(d.encode(), db=self._db["digests"]) is None}

    def iter_chunks(self, page: int = 512) -> Iterator[StoredChunk]:
        """Every distinct chunk in id order, read in short transactions of ``page`` records."""
        for rows in self._pages("chunks", page):
            yield from (_chunk(_unkey(k), json.loads(v)) for k, v in rows)

    def iter_vectors(self, dim: int, page: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids [n] int64, vectors [n, dim] float32)`` pages in id order."""
        for rows in self._pages("vectors", page):
            ids = np.array([_unkey(k) for k, _ in rows], dtype=np.int64)
            vectors = np.frombuffer(b"".join(v for _, v in rows), dtype=np.float32)
            yield ids, vectors.reshape(len(rows), dim)

    # ----- the one write path ------------------------------------------------------------
    def apply(
        self,
        upserts: list[tuple[Document, list[Chunk]]],
        deletes: list[str],
        vectors: dict[str, np.ndarray],
    ) -> ChangeSet:
        """Delete ``deletes``, then (re)write ``upserts``, in one transaction.

        ``vectors`` maps the digest of every chunk text not yet stored to its ``[dim]``
        embedding (see ``missing_digests``). Chunks whose reference count drops to zero are
        deleted, unless an upsert in the same call references them again.
        """
        with self._write() as txn:
            w = _Writer(txn, self._db)
            for doc_id in deletes:
                w.drop_document(doc_id)
            for doc, _ in upserts:
                w.drop_document(doc.id)
            added: list[StoredChunk] = []
            added_vectors: list[np.ndarray] = []
            for doc, chunks in upserts:
                for cid, is_new in w.put_document(doc, chunks):
                    if is_new:
                        chunk = w.chunk(cid)
                        if chunk.digest not in vectors:
                            raise InvalidRequestError(
                                f"no embedding given for new chunk {chunk.digest[:12]} "
                                f"of document {doc.id!r}"
                            )
                        added.append(chunk)
                        added_vectors.append(vectors[chunk.digest])
                        txn.put(_key(cid), _f32(vectors[chunk.digest]), db=self._db["vectors"])
            removed, freed = w.flush()
        stacked = np.stack(added_vectors).astype(np.float32) if added_vectors else None
        return ChangeSet(
            added=tuple(added),
            added_vectors=stacked if stacked is not None else np.zeros((0, 0), np.float32),
            removed_ids=tuple(removed),
            freed=tuple(freed),
        )

    def _write(self) -> Any:
        return _WriteTxn(self._env)

    def _pages(self, db: str, page: int) -> Iterator[list[tuple[bytes, bytes]]]:
        start: bytes | None = None
        while True:
            with self._env.begin() as txn:
                cursor = txn.cursor(db=self._db[db])
                found = cursor.set_range(start) if start is not None else cursor.first()
                rows: list[tuple[bytes, bytes]] = []
                while found and len(rows) < page:
                    rows.append((bytes(cursor.key()), bytes(cursor.value())))
                    found = cursor.next()
            if not rows:
                return
            yield rows
            if len(rows) < page:
                return
            start = rows[-1][0] + b"\x00"  # the smallest key after the last one read


class _Writer:
    """Reference-counting bookkeeping inside one write transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]):
        self._txn, self._db = txn, dbs
        self._chunks: dict[int, dict[str, Any]] = {}  # chunk records touched in this txn
        self._new: set[int] = set()
        meta = self._txn.get(b"next_chunk_id", db=self._db["meta"])
        self._next_id = 1 if meta is None else int(json.loads(meta))

    def chunk(self, cid: int) -> StoredChunk:
        return _chunk(cid, self._chunks[cid])

    def drop_document(self, doc_id: str) -> None:
        raw = self._txn.get(doc_id.encode(), db=self._db["docs"])
        if raw is None:
            return
        for ordinal, (cid, _, _) in enumerate(json.loads(raw)["chunks"]):
            record = self._load(cid)
            record["owners"].remove([doc_id, ordinal])
        self._txn.delete(doc_id.encode(), db=self._db["docs"])

    def put_document(self, doc: Document, chunks: list[Chunk]) -> list[tuple[int, bool]]:
        """Store ``doc``; returns ``(chunk_id, is_new)`` per chunk."""
        refs, out = [], []
        for chunk in chunks:
            digest = content_digest(chunk.text)
            raw = self._txn.get(digest.encode(), db=self._db["digests"])
            is_new = raw is None
            if is_new:
                cid = self._next_id
                self._next_id += 1
                self._new.add(cid)
                self._chunks[cid] = {
                    "text": chunk.text, "digest": digest, "n_tokens": chunk.n_tokens,
                    "title": doc.title, "owners": [],
                }
                self._txn.put(digest.encode(), _key(cid), db=self._db["digests"])
            else:
                cid = _unkey(raw)
            self._load(cid)["owners"].append([doc.id, chunk.ordinal])
            refs.append([cid, chunk.char_start, chunk.char_end])
            out.append((cid, is_new))
        record = {"id": doc.id, "title": doc.title, "text": doc.text,
                  "metadata": doc.metadata, "chunks": refs}
        self._txn.put(doc.id.encode(), _json(record), db=self._db["docs"])
        return out

    def flush(self) -> tuple[list[int], list[StoredChunk]]:
        """Write touched chunks; delete unreferenced ones. Returns (removed ids, their records)."""
        removed, freed = [], []
        for cid in sorted(self._chunks):
            record = self._chunks[cid]
            if record["owners"]:
                self._txn.put(_key(cid), _json(record), db=self._db["chunks"])
                continue
            self._txn.delete(_key(cid), db=self._db["chunks"])
            self._txn.delete(record["digest"].encode(), db=self._db["digests"])
            self._txn.delete(_key(cid), db=self._db["vectors"])
            removed.append(cid)
            freed.append(StoredChunk(cid, record["text"], record["digest"], record["n_tokens"], record["title"], ()))
        meta = self._db["meta"]
        generation = json.loads(self._txn.get(b"generation", b"0", db=meta))
        self._txn.put(b"generation", _json(generation + 1), db=meta)
        self._txn.put(b"next_chunk_id", _json(self._next_id), db=meta)
        return removed, freed

    def _load(self, cid: int) -> dict[str, Any]:
        if cid not in self._chunks:
            raw = self._txn.get(_key(cid), db=self._db["chunks"])
            if raw is None:
                raise StorageError(
                    f"docstore is inconsistent: chunk {cid} is referenced but missing"
                )
            self._chunks[cid] = json.loads(raw)
        return self._chunks[cid]


class _WriteTxn:
    """A write transaction that turns LMDB failures into StorageError."""

    def __init__(self, env: lmdb.Environment):
        self._env = env

    def __enter__(self) -> lmdb.Transaction:
        self._txn = self._env.begin(write=True)
        return self._txn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self._txn.commit()
                return
            except lmdb.Error as err:
                failure = err
        else:
            self._txn.abort()
            if not isinstance(exc, lmdb.Error):
                return  # our own errors propagate unchanged
            failure = exc
        if isinstance(failure, lmdb.MapFullError):
            raise StorageError(
                f"docstore {self._env.path()!r} is full at map_size "
                f"{self._env.info()['map_size']} bytes; reopen with a larger map_size"
            ) from failure
        full = _no_space(self._env.path())
        if full is not None:  # LMDB reports a short write on a full disk as EIO; name the cause
            raise StorageError(
                f"docstore {self._env.path()!r} write failed: no space left on device ({full.strerror})"
            ) from full
        raise StorageError(f"docstore {self._env.path()!r} write failed: {failure}") from failure


def _no_space(path: str, slack: int = 1 << 20) -> OSError | None:
    """OSError(ENOSPC) if the filesystem holding ``path`` has less than ``slack`` bytes free."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    return OSError(errno.ENOSPC, f"{free} bytes free") if free < slack else None


def _doc(d: dict[str, Any]) -> StoredDocument:
    return StoredDocument(
        id=d["id"], title=d["title"], text=d["text"], metadata=d["metadata"],
        chunks=tuple((int(c), int(s), int(e)) for c, s, e in d["chunks"]),
    )


def _chunk(cid: int, d: dict[str, Any]) -> StoredChunk:
    return StoredChunk(
        chunk_id=cid, text=d["text"], digest=d["digest"], n_tokens=int(d["n_tokens"]),
        title=d["title"], owners=tuple((o, int(i)) for o, i in d["owners"]),
    )


def _key(cid: int) -> bytes:
    return int(cid).to_bytes(8, "big")


def _unkey(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _f32(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
