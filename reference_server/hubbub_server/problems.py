"""Errors as ``application/problem+json`` (RFC 9457), with a clear ``detail`` and never a trace.

Every response carries ``status``, ``title``, ``detail``, ``code`` (stable, machine-readable) and
``request_id``; validation problems add ``errors``: ``[{"field": ..., "message": ...}]``, and
their ``detail`` starts with the field. Under ``/v1`` the body also has OpenAI's ``error`` object
(``message``, ``type``, ``code``, ``param``), which OpenAI clients show in their exceptions.
"""

from __future__ import annotations

import logging
import math
import re
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from hubbub.errors import AuthenticationError, HubbubError, InvalidRequestError
from hubbub.log import current_context
from hubbub.redaction import public_message

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_RESPONSES", "Problem", "problem"]

logger = logging.getLogger("hubbub.server")

MEDIA_TYPE = "application/problem+json"
_MISSING = re.compile(r"missing required field `(?P<field>[^`]+)`")
_UNKNOWN = re.compile(r"unknown field `(?P<field>[^`]*)`")
_BODY_KEY = "data"  # Litestar's name for the request body in validation errors


class FieldProblem(msgspec.Struct, kw_only=True):
    """One field's problem in a request."""

    field: str
    """Dotted path of the field, e.g. ``messages[0].role``."""
    message: str


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An error response (``application/problem+json``): what the OpenAPI document shows."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    """What went wrong, for a person; starts with the field when one is at fault."""
    code: str
    """Stable machine-readable name: ``invalid_request``, ``not_found``, ``unauthenticated``..."""
    request_id: str | None = None
    errors: list[FieldProblem] | None = None


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        description=description,
        media_type=MEDIA_TYPE,
        generate_examples=False,
    )


PROBLEM_RESPONSES: dict[int, ResponseSpec] = {
    400: _spec("Malformed request (for example, invalid JSON)"),
    401: _spec("Missing, invalid, expired or revoked credentials"),
    404: _spec("Not found, or not yours"),
    409: _spec("Conflicts with the current state"),
    413: _spec("Request body too large"),
    422: _spec("A field is invalid; `errors` names it"),
}
"""The problem responses every API route may give, for the OpenAPI document."""


def problem(
    request: Request[Any, Any, Any] | None,
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, object] | None = None,
) -> Response[dict[str, Any]]:
    """A problem+json response (with OpenAI's ``error`` object for ``/v1`` requests)."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    code = code or title.lower().replace(" ", "_")
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    request_id = current_context().get("request_id")
    if request_id:
        body["request_id"] = request_id
    if errors:
        body["errors"] = errors
    if extensions:
        body.update({k: v for k, v in extensions.items() if k not in body})
    if request is not None and str(request.scope.get("path", "")).startswith("/v1/"):
        param = errors[0]["field"] if errors else None
        body["error"] = {"message": detail, "type": code, "code": code, "param": param}
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _hubbub_error(request: Request[Any, Any, Any], exc: HubbubError) -> Response[Any]:
    if exc.status >= 500 and not exc.reported:
        logger.warning("%s: %s", exc.code, exc)
    errors = None
    detail = public_message(exc)  # a provider's message may hold a URL's credentials...
    if isinstance(exc, InvalidRequestError) and exc.field:
        errors = [{"field": exc.field, "message": detail}]
        if not detail.startswith(exc.field):
            detail = f"{exc.field}: {detail}"
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
    retry_after = exc.retry_after
    if retry_after is not None:
        headers = {**(headers or {}), "Retry-After": str(max(1, math.ceil(retry_after)))}
    return problem(
        request,
        exc.status,
        detail,
        code=exc.code,
        errors=errors,
        headers=headers,
        extensions=exc.extensions(),
    )


def _field_error(entry: dict[str, Any]) -> dict[str, Any]:
    key, message = str(entry["key"]), str(entry.get("message", ""))
    if missing := _MISSING.search(message):  # msgspec names the field in its message
        name = missing.group("field")
        key = name if key == _BODY_KEY else f"{key}.{name}"
        return {"field": key, "message": "this field is required"}
    if unknown := _UNKNOWN.search(message):
        name = unknown.group("field")
        key = name if key == _BODY_KEY else f"{key}.{name}"
        return {"field": key, "message": "unknown field"}
    if message in ("Expected `array` of length >= 1", "Expected `str` of length >= 1"):
        return {"field": key, "message": "must not be empty"}
    return {"field": key, "message": _sentence(message)}


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    fields = [_field_error(e) for e in extra if isinstance(e, dict) and e.get("key")]
    if fields:
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in fields)
        return problem(request, 422, detail, code="invalid_request", errors=fields)
    return _bad_request(request, exc)


def _bad_request(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    detail = exc.detail
    undecodable = detail.startswith("JSON is malformed") or isinstance(
        exc.__cause__, SerializationException
    )
    if undecodable:
        reason = detail.split(":", 1)[1].strip() if ":" in detail else detail
        return problem(
            request, 400, f"the request body is not valid JSON: {reason}", code="malformed_json"
        )
    return problem(request, 400, detail, code="bad_request")


def _sentence(message: str) -> str:
    message = message.replace("`", "'")
    return message[:1].lower() + message[1:]


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    detail = exc.detail
    if status == 400:
        return _bad_request(request, exc)
    if status == 413:
        limit = request.app.request_max_body_size
        detail = f"the request body is larger than the limit of {limit} bytes"
    elif status == 404 and detail in ("", "Not Found"):
        detail = f"no route for {request.method} {request.scope['path']}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.scope['path']}"
    return problem(request, status, detail, headers=dict(exc.headers or {}))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.error("unhandled error in %s %s", request.method, request.scope["path"], exc_info=exc)
    return problem(
        request,
        500,
        "the server failed to handle this request; the request id is in the logs",
        code="internal_error",
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HubbubError: _hubbub_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
