"""Request bodies are JSON, strictly: the right content type (else 415), UTF-8, no NaN or
Infinity, no numbers out of float range, bounded nesting; anything else is 400 "invalid JSON".

FastAPI would treat a wrong content type as a missing body (422) and report a syntax error as
a 422 "JSON decode error"; `JsonRoute` checks the body first, then lets FastAPI validate it.
"""

import email.message
import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from chunkcache.api.errors import ApiError


def bad_json(reason: str) -> ApiError:
    return ApiError(400, "invalid_json", f"invalid JSON: {reason}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise bad_json(f"the number {text[:40]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise bad_json(f"{name} is not JSON; send a number")


def is_json_type(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def parse_json(body: bytes) -> Any:
    """The body's JSON value, or ApiError(400) saying what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_json(f"the body is not UTF-8 (byte {body[e.start]:#04x} at offset {e.start})") from None
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise bad_json(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise bad_json("nested too deeply") from None
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise bad_json(str(e)) from None


class JsonRoute(APIRoute):
    """An APIRoute whose JSON body is checked (415/400) before FastAPI parses and validates it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            body = await request.body()
            if body:
                content_type = request.headers.get("content-type")
                if not is_json_type(content_type):
                    raise ApiError(415, "unsupported_media_type",
                                   f"send the body as JSON with 'Content-Type: application/json', got {content_type or 'no content type'!r}")
                parse_json(body)
            return await handler(request)

        return checked
