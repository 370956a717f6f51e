"""Plain ASGI middleware (streaming-safe): request ids, request metrics, API-key check, body size limit."""

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chunkcache.api.errors import REQUEST_ID_SCOPE_KEY, error_body, from_exception, log_failure, request_id_of

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


async def send_error(scope: Scope, send: Send, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(kind, message, request_id_of(scope))).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestId:
    """Gives every request an id (the client's `X-Request-ID` if it is short and plain, else a new
    one), puts it in the scope for error bodies and logs, and returns it as `X-Request-ID`.

    It also answers an unexpected exception (before the response started) with a 500 error body
    and logs it, instead of letting it reach the server, which would drop the keep-alive connection.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = given.decode() if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex
        scope[REQUEST_ID_SCOPE_KEY] = request_id

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # a stream broke half-way: nothing left to say in this response
                raise
            log_failure(request_id, f"{scope['method']} {scope['path']}", exc)
            mapped = from_exception(exc)
            await send_error(scope, send_with_id, mapped.status, mapped.kind, mapped.message, mapped.headers)


class RequestMetrics:
    """Counts every HTTP request by route template (not raw path: ids would explode the labels)."""

    def __init__(self, app: ASGIApp, routes: list[Route], observe: Callable[[str, str, int, float], None]):
        self.app = app
        self._routes = routes
        self._observe = observe

    def _route_of(self, scope: Scope) -> str:
        for route in self._routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            self._observe(self._route_of(scope), scope["method"], status["code"], time.perf_counter() - start)


class ApiKeyAuth:
    """`Authorization: Bearer <key>` on every path but the probes; constant-time comparison."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        if not secrets.compare_digest(given, self._expected):
            reason = "missing Authorization header" if not given else "wrong API key"
            await send_error(scope, send, 401, "unauthorized", f"{reason}: send 'Authorization: Bearer <api key>'",
                             {"WWW-Authenticate": "Bearer"})
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """Reads the whole body (at most `max_bytes`) before the app runs; larger bodies get 413."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than the server's limit of {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_error(scope, send, 413, "payload_too_large", f"{too_large} (Content-Length {int(value)})")
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(scope, send, 413, "payload_too_large", too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as usual

        await self.app(scope, replay, send)
