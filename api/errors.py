"""Every error leaves the service as `{"error": {"type", "message"}}` with a fitting status."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chunkcache.errors import ChunkCacheError, ContextTooLongError, InvalidRequestError, NotFoundError

log = logging.getLogger(__name__)


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


def error_body(kind: str, message: str) -> dict:
    return {"error": {"type": kind, "message": message}}


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(kind, message), status_code=status, headers=headers)


def from_exception(exc: BaseException) -> ApiError:
    """Map a facade (or our own) exception to status + type; unknown errors are 500s."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ContextTooLongError):
        return ApiError(400, "context_too_long", str(exc))
    if isinstance(exc, InvalidRequestError):
        return ApiError(422, "invalid_request", str(exc))
    if isinstance(exc, NotFoundError):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, ChunkCacheError):
        return ApiError(500, "chunkcache_error", f"{type(exc).__name__}: {exc}")
    return ApiError(500, "internal_error", f"{type(exc).__name__}: {exc}")


_HTTP_KINDS = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _describe(error: dict) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
    message = f"{loc}: {error.get('msg', 'invalid value')}"
    if "input" in error and error.get("type") != "missing":
        shown = repr(error["input"])
        message += f" (got {shown[:80] + '...' if len(shown) > 80 else shown})"
    return message


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.kind, exc.message, exc.headers)

    async def on_chunkcache_error(request: Request, exc: ChunkCacheError) -> JSONResponse:
        mapped = from_exception(exc)
        if mapped.status >= 500:
            log.error("request %s %s failed: %s", request.method, request.url.path, mapped.message)
        return error_response(mapped.status, mapped.kind, mapped.message)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        message = "; ".join(_describe(e) for e in errors[:5])
        if len(errors) > 5:
            message += f"; and {len(errors) - 5} more"
        return error_response(422, "invalid_request", message)

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _HTTP_KINDS.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs for the API"
        return error_response(exc.status_code, kind, detail, exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after sending this response, so uvicorn logs the traceback once.
        mapped = from_exception(exc)
        return error_response(mapped.status, mapped.kind, mapped.message)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ChunkCacheError, on_chunkcache_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
