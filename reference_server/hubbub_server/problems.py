"""Errors as ``application/problem+json`` (RFC 9457), with a clear ``detail`` and never a trace.

Every response carries ``status``, ``title``, ``detail``, ``code`` (stable, machine-readable) and
``request_id``; validation problems add ``errors``: ``[{"field": ..., "message": ...}]``.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from hubbub.errors import AuthenticationError, HubbubError, InvalidRequestError
from hubbub.log import current_context

__all__ = ["EXCEPTION_HANDLERS", "problem"]

logger = logging.getLogger("hubbub.server")

MEDIA_TYPE = "application/problem+json"


def problem(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    """A problem+json response."""
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code or title.lower().replace(" ", "_"),
    }
    request_id = current_context().get("request_id")
    if request_id:
        body["request_id"] = request_id
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _hubbub_error(request: Request[Any, Any, Any], exc: HubbubError) -> Response[Any]:
    if exc.status >= 500:
        logger.warning("%s: %s", exc.code, exc)
    errors = None
    if isinstance(exc, InvalidRequestError) and exc.field:
        errors = [{"field": exc.field, "message": str(exc)}]
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
    return problem(exc.status, str(exc), code=exc.code, errors=errors, headers=headers)


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    fields = [e for e in extra if isinstance(e, dict) and e.get("key")]
    if fields:
        errors = [
            {"field": e["key"], "message": _sentence(str(e.get("message", "")))} for e in fields
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, detail, code="invalid_request", errors=errors)
    return _bad_request(exc.detail)


def _bad_request(detail: str) -> Response[Any]:
    if detail.startswith("JSON is malformed"):
        detail = "the request body is not valid JSON" + detail[len("JSON is malformed") :]
        return problem(400, detail, code="malformed_json")
    return problem(400, detail, code="bad_request")


def _sentence(message: str) -> str:
    message = message.replace("`", "'")
    return message[:1].lower() + message[1:]


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    detail = exc.detail
    if status == 400:
        return _bad_request(detail)
    if status == 413:
        limit = request.app.request_max_body_size
        detail = f"the request body is larger than the limit of {limit} bytes"
    elif status == 404 and detail in ("", "Not Found"):
        detail = f"no route for {request.method} {request.url.path}"
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem(status, detail, headers=dict(exc.headers or {}))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
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
