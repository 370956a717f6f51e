"""The served OpenAPI document says what the server does: every error status a route can
answer, with the error body's schema, and this server's own caps (from its ServiceConfig) as
`maximum`/`maxItems` on the request fields they bound."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from chunkcache.api.middleware import PUBLIC_PATHS
from chunkcache.api.schemas import ErrorBody
from chunkcache.api.settings import ServiceConfig

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}

DESCRIPTIONS = {
    400: "Invalid JSON, a body that is not UTF-8, or a prompt longer than the model's context",
    401: "Missing or wrong API key (`Authorization: Bearer <key>`)",
    404: "No such document, job or route",
    409: "A background job is already running",
    413: "The request body is larger than the server's limit",
    415: "The body is not sent as `application/json`",
    422: "The request does not match the schema or the server's caps; the message names the field",
    500: "The server failed; the body carries a request id for its log",
    503: "The model queue is full (with `Retry-After`), the request's working cache can never fit (fewer passages or "
         "tokens, or more `--working-cache-mib`), or the server is starting or stopping",
    504: "The request did not finish within the server's time limit",
    507: "The server has no disk space left to store the change; nothing was changed",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with its description and the error body."""
    return {s: {"model": ErrorBody, "description": DESCRIPTIONS[s]} for s in statuses}


# (schema name, property) -> the ServiceConfig field that caps it, and the keyword to set.
CAPS = {
    ("QueryRequest", "max_new_tokens"): ("max_new_tokens_limit", "maximum"),
    ("QueryRequest", "top_k"): ("max_top_k", "maximum"),
    ("AnswerRequest", "max_new_tokens"): ("max_new_tokens_limit", "maximum"),
    ("AnswerRequest", "passages"): ("max_top_k", "maxItems"),
    ("ChatRequest", "max_tokens"): ("max_new_tokens_limit", "maximum"),
    ("ChatRequest", "max_completion_tokens"): ("max_new_tokens_limit", "maximum"),
    ("ChunkcacheOptions", "top_k"): ("max_top_k", "maximum"),
    ("ChatRequest", "documents"): ("max_top_k", "maxItems"),
    ("ChatDocument", "text"): ("max_document_chars", "maxLength"),
}


def _cap(prop: dict, keyword: str, value: int) -> None:
    """Set keyword on the schema (or on its integer/array branch of an anyOf with null); a
    default above the cap is lowered to it, as the routes do (`answers.capped`)."""
    branches = prop.get("anyOf", [prop])
    for branch in branches:
        if branch.get("type") in ("integer", "array", "string"):
            branch[keyword] = value
    if keyword == "maximum" and isinstance(prop.get("default"), int) and prop["default"] > value:
        prop["default"] = value


def describe(app: FastAPI, config: ServiceConfig) -> dict[str, Any]:
    """The OpenAPI document of app, completed for config (cached on the app as FastAPI does)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    body_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in body_schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas.setdefault("ErrorBody", body_schema)
    for (name, prop), (field, keyword) in CAPS.items():
        for schema_name, schema in schemas.items():
            if schema_name == name or schema_name.startswith(name + "-"):
                if prop in schema.get("properties", {}):
                    _cap(schema["properties"][prop], keyword, getattr(config, field))
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            extra = [500]
            if config.auth_enabled and path not in PUBLIC_PATHS:
                extra.append(401)
            if "requestBody" in operation:
                extra += [400, 413, 415, 422]
            responses = operation.setdefault("responses", {})
            for status in extra:
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status],
                                                   "content": {"application/json": {"schema": ERROR_REF}}})
            if "422" in responses:  # FastAPI's default points at its own body; ours is ErrorBody
                responses["422"] = {"description": DESCRIPTIONS[422], "content": {"application/json": {"schema": ERROR_REF}}}
    if config.auth_enabled:
        doc["components"].setdefault("securitySchemes", {})["bearer"] = {"type": "http", "scheme": "bearer"}
        for path, operations in doc["paths"].items():
            if path not in PUBLIC_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
    app.openapi_schema = doc
    return doc
