"""The typed records that cross the corpus boundary, and input validation for documents."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from chunkcache.errors import InvalidRequestError

MAX_ID_BYTES = 400  # LMDB keys are limited to 511 bytes; leave room for prefixes


@dataclass(frozen=True)
class Document:
    """A source document. ``metadata`` must be JSON-serialisable."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DocumentInfo:
    """A listing entry: a document without its text."""

    id: str
    title: str
    n_chars: int
    n_chunks: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ChunkRecord:
    """One distinct indexed chunk (one KV-cache entry), attributed to its first owner.

    Identical chunk text in several documents is one record; ``doc_id``/``ordinal`` name the
    earliest-added document still holding it.
    """

    chunk_id: int
    doc_id: str
    ordinal: int
    text: str
    title: str
    content_digest: str
    n_tokens: int


@dataclass(frozen=True)
class ChunkHit:
    """A search result. ``score`` is cosine similarity for ``retrieval="dense"`` and the
    reciprocal-rank-fusion score for ``"hybrid"``; higher is better in both."""

    chunk_id: int
    doc_id: str
    ordinal: int
    text: str
    title: str
    score: float
    content_digest: str
    n_tokens: int


@dataclass(frozen=True)
class IngestReport:
    """What one ``Corpus.ingest`` call changed.

    ``new_digests``: chunk texts that entered the index (their KV caches can be built);
    ``freed_digests``: chunk texts no document references any more after replacements
    (their KV caches can be evicted).
    """

    doc_ids: tuple[str, ...]
    n_chunks: int
    new_digests: tuple[str, ...]
    freed_digests: tuple[str, ...]


_FIELDS = {"id", "text", "title", "metadata"}


def validate_documents(items: Iterable[Document | dict[str, Any]]) -> list[Document]:
    """Every item checked and converted, or InvalidRequestError naming the first bad one.

    Checks: Document or dict with only known keys; non-empty string id of at most
    ``MAX_ID_BYTES`` UTF-8 bytes, unique within the batch; string text with non-whitespace;
    string title; JSON-serialisable dict metadata.
    """
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        doc = _coerce(item, i)
        where = f"documents[{i}] (id {doc.id!r})"
        if doc.id in seen:
            raise InvalidRequestError(f"{where}: duplicate id, also at documents[{seen[doc.id]}]")
        seen[doc.id] = i
        if not isinstance(doc.text, str):
            raise InvalidRequestError(f"{where}: text must be a str, got {type(doc.text).__name__}")
        if not doc.text.strip():
            raise InvalidRequestError(f"{where}: text is empty or whitespace only")
        if not isinstance(doc.title, str):
            raise InvalidRequestError(
                f"{where}: title must be a str, got {type(doc.title).__name__}"
            )
        if not isinstance(doc.metadata, dict):
            raise InvalidRequestError(
                f"{where}: metadata must be a dict, got {type(doc.metadata).__name__}"
            )
        try:
            json.dumps(doc.metadata)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"{where}: metadata is not JSON-serialisable: {exc}") from exc
        docs.append(doc)
    return docs


def _coerce(item: Any, i: int) -> Document:
    if isinstance(item, dict):
        unknown = sorted(set(item) - _FIELDS)
        if unknown:
            raise InvalidRequestError(
                f"documents[{i}]: unknown keys {unknown}; allowed: {sorted(_FIELDS)}"
            )
        if "id" not in item or "text" not in item:
            missing = [k for k in ("id", "text") if k not in item]
            raise InvalidRequestError(f"documents[{i}]: missing {missing}")
        item = Document(
            id=item["id"],
            text=item["text"],
            title=item.get("title", ""),
            metadata=item.get("metadata", {}),
        )
    if not isinstance(item, Document):
        raise InvalidRequestError(
            f"documents[{i}] must be a Document or a dict, got {type(item).__name__}"
        )
    if not isinstance(item.id, str) or not item.id:
        raise InvalidRequestError(f"documents[{i}]: id must be a non-empty str, got {item.id!r}")
    if len(item.id.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidRequestError(
            f"documents[{i}]: id is {len(item.id.encode('utf-8'))} bytes, "
            f"the limit is {MAX_ID_BYTES}"
        )
    return item
