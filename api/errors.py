"""Every error leaves the service as `{"error": {"type", "message", "request_id"}}`.

`type` is a stable code a client may branch on; `message` is about the client's request;
`request_id` (also the `X-Request-ID` header) finds the details in the server log. A failure
of ours (5xx) never shows exception classes, messages or server paths: those go to the log.
"""

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from chunkcache.errors import (ChunkCacheError, ContextTooLongError, InvalidRequestError, NotFoundError, RequestCancelledError,
                               StorageError, WorkingCacheFullError, is_no_space)

log = logging.getLogger(__name__)

REQUEST_ID_SCOPE_KEY = "chunkcache.request_id"


class ApiError(Exception):
    """An error the service raises on purpose; `kind` becomes the body's error.type."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def request_id_of(scope) -> str | None:
    return scope.get(REQUEST_ID_SCOPE_KEY)


def error_body(kind: str, message: str, request_id: str | None = None) -> dict:
    return {"error": {"type": kind, "message": message, "request_id": request_id}}


def error_response(request: Request, error: ApiError) -> JSONResponse:
    # The header is set here too: a 500 leaves through starlette's outermost error middleware,
    # past the RequestId middleware that sets it on every other response.
    request_id = request_id_of(request.scope)
    headers = {**error.headers, **({"X-Request-ID": request_id} if request_id else {})}
    return JSONResponse(error_body(error.kind, error.message, request_id), status_code=error.status, headers=headers)


def from_exception(exc: BaseException) -> ApiError:
    """Map a facade (or our own) exception to status + type. Our own failures get a message
    that says nothing about the server's internals; `log_failure` records the details."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextTooLongError):
        return ApiError(400, "context_too_long", str(exc))
    if isinstance(exc, InvalidRequestError):
        return ApiError(422, "invalid_request", str(exc))
    if isinstance(exc, RequestCancelledError):  # the client went away or its time ran out
        return ApiError(503, "cancelled", "the request was cancelled")
    if isinstance(exc, WorkingCacheFullError):
        headers = {} if exc.retry_after_s is None else {"Retry-After": str(max(1, round(exc.retry_after_s)))}
        return ApiError(503, "working_cache_full", str(exc), headers=headers)
    if isinstance(exc, NotFoundError):
        return ApiError(404, "not_found", str(exc))
    if is_no_space(exc):
        return ApiError(507, "insufficient_storage", "the server has no disk space left to store this; "
                                                     "nothing was changed, retry later")
    if isinstance(exc, StorageError):
        return ApiError(500, "storage_error", "the server's storage failed while handling this request; "
                                              "the request id finds the details in its log")
    return ApiError(500, "internal_error", "the server failed while handling this request; "
                                           "the request id finds the details in its log")


def log_failure(request_id: str | None, what: str, exc: BaseException) -> None:
    log.error("request %s (%s) failed: %s: %s", request_id, what, type(exc).__name__, exc, exc_info=exc)


_HTTP_KINDS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 415: "unsupported_media_type"}


_UNION_TAG = re.compile(r"^([A-Z]\w*|[\w-]+\[.*\])$")  # pydantic names union branches: DocumentIn, list[DocumentIn]
_BRANCH_MISMATCH = {"list_type", "dict_type", "model_type", "model_attributes_type", "string_type"}


def _relevant(errors: list[dict]) -> list[dict]:
    """Drop "not a list/object/string" errors of union branches when another branch says more."""
    specific = [e for e in errors if not (e.get("type") in _BRANCH_MISMATCH and any(isinstance(p, str) and _UNION_TAG.match(p) for p in e.get("loc", ())))]
    return specific or errors


def _describe(error: dict) -> str:
    parts = [str(p) for p in error.get("loc", ()) if p != "body" and not (isinstance(p, str) and _UNION_TAG.match(p))]
    loc = ".".join(parts) or "body"
    message = f"{loc}: {error.get('msg', 'invalid value')}"
    if "input" in error and error.get("type") != "missing":
        shown = repr(error["input"])
        message += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
    return message


def allowed_methods(routes: list, scope) -> list[str]:
    """Every method some route serves at scope's path (starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    # A bare scope with a method no route has: any match is a path match.
    probe = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", ""), "method": "\x00"}
    for route in routes:
        match, _ = route.matches(probe)
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI, routes: list) -> None:
    """routes: every route of app (with full paths), to list the methods a 405 path allows."""

    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc)

    async def on_chunkcache_error(request: Request, exc: ChunkCacheError) -> JSONResponse:
        mapped = from_exception(exc)
        if mapped.status >= 500:
            log_failure(request_id_of(request.scope), f"{request.method} {request.url.path}", exc)
        return error_response(request, mapped)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _relevant(list(exc.errors()))
        message = "; ".join(_describe(e) for e in errors[:5])
        if len(errors) > 5:
            message += f"; and {len(errors) - 5} more"
        return error_response(request, invalid(message))

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_KINDS.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs for the API"
        if exc.status_code == 405:
            methods = allowed_methods(routes, request.scope)
            headers["Allow"] = ", ".join(methods)
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {', '.join(methods)}"
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = "the request body could not be read as UTF-8 JSON"
        return error_response(request, ApiError(exc.status_code, kind, detail, headers))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Only reached past RequestId (which answers unexpected errors itself); starlette re-raises after.
        log_failure(request_id_of(request.scope), f"{request.method} {request.url.path}", exc)
        return error_response(request, from_exception(exc))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ChunkCacheError, on_chunkcache_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
