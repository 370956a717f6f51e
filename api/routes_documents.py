"""Documents: add (one or a list), list, get, delete, and server-side ingest when allowed."""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import APIRouter, Body, Query
from starlette.concurrency import run_in_threadpool

from chunkcache.api.errors import ApiError, invalid
from chunkcache.api.ingest import collect_files
from chunkcache.api.json_body import JsonRoute
from chunkcache.api.openapi import errors
from chunkcache.api.schemas import (
    DocumentBatch,
    DocumentDeleted,
    DocumentIn,
    DocumentInfoOut,
    DocumentList,
    DocumentOut,
    DocumentsAdded,
    IngestRequest,
)
from chunkcache.api.services import Services
from chunkcache.errors import NotFoundError

T = TypeVar("T")


def known(fn: Callable[[str], T]) -> Callable[[str], T]:
    """fn(doc_id), with a 404 that names the id but not the server's corpus directory."""

    def call(doc_id: str) -> T:
        try:
            return fn(doc_id)
        except NotFoundError:
            raise ApiError(404, "not_found", f"no document with id {doc_id!r}") from None

    return call


def documents_router(s: Services) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["documents"], route_class=JsonRoute)
    timeout = s.config.request_timeout_s

    async def write(fn: Callable[[], T]) -> T:
        """A write on the write lane: a write that started is finished, never abandoned at the
        timeout, so a 2xx means done and an error means not done (safe to retry)."""
        return await s.writes.run(lambda _: fn(), timeout, finish_started=True)

    @router.post("/documents", status_code=201, response_model=DocumentsAdded, summary="Add or replace documents",
                 responses=errors(503, 504, 507))
    async def add_documents(body: Annotated[DocumentIn | DocumentBatch, Body()]) -> DocumentsAdded:
        docs = body if isinstance(body, list) else [body]
        # Re-adding an id replaces the document, within one batch too: the last one wins.
        payload = list({d.id: d.model_dump() for d in docs}.values())
        ids = await write(lambda: s.cache.add_documents(payload))
        return DocumentsAdded(ids=ids, count=len(ids))

    @router.get("/documents", response_model=DocumentList, summary="List documents (id order, without text)")
    async def list_documents(offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DocumentList:
        infos = await run_in_threadpool(s.cache.list_documents, offset, limit)
        return DocumentList(
            documents=[DocumentInfoOut(id=d.id, title=d.title, n_chars=d.n_chars, n_chunks=d.n_chunks, metadata=d.metadata) for d in infos],
            offset=offset,
            limit=limit,
        )

    @router.get("/documents/{doc_id:path}", response_model=DocumentOut, summary="Get one document with its text", responses=errors(404))
    async def get_document(doc_id: str) -> DocumentOut:
        doc = await run_in_threadpool(known(s.cache.get_document), doc_id)
        return DocumentOut(id=doc.id, title=doc.title, text=doc.text, metadata=doc.metadata)

    @router.delete("/documents/{doc_id:path}", response_model=DocumentDeleted, summary="Delete a document and the KV only it used",
                   responses=errors(404, 503, 504, 507))
    async def delete_document(doc_id: str) -> DocumentDeleted:
        freed = await write(lambda: known(s.cache.delete_document)(doc_id))
        return DocumentDeleted(id=doc_id, freed_chunks=len(freed))

    if s.config.ingest_root is not None:
        root = Path(s.config.ingest_root)

        @router.post("/ingest", status_code=201, response_model=DocumentsAdded, responses=errors(404, 503, 504, 507),
                     summary="Add .txt/.md/.jsonl files or folders from under the server's ingest root")
        async def ingest(body: IngestRequest) -> DocumentsAdded:
            def work():
                docs = s.cache.load_files(collect_files(root, body.paths, s.cache.loadable))
                if not docs:
                    raise invalid(f"no .txt, .md or .jsonl files under {body.paths}")
                return s.cache.add_documents(docs)

            ids = await write(work)
            return DocumentsAdded(ids=ids, count=len(ids))

    return router
