"""How the HTTP API fails: every error as JSON (``{"error": {"status", "code", "message", "details"}}``), the
size limits checked before routing (414, 413), and the 422 for undeclared or repeated query parameters."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.utils import field_annotation_is_sequence
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from explainer.api import models as m
from explainer.errors import ExplainerError, InputError, UnknownUnitError

log = logging.getLogger("explainer.api.app")

MAX_QUERY_STRING = 8192
"""Longest accepted URL query string (bytes); longer requests get 414."""
MAX_BODY = 16384
"""Largest accepted request body (bytes); larger requests get 413."""


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"status": status, "code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    422: "validation_error",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorBody, "description": desc}
    for code, desc in (
        (401, "no API key, or an unknown one"),
        (403, "the key may not use this route"),
        (404, "no such unit, run or route"),
        (413, "request body too large"),
        (414, "query string too long"),
        (422, "invalid or oversized parameters"),
        (500, "internal error"),
    )
}


def install_error_handlers(app: FastAPI) -> None:
    """Every error as JSON (``ErrorBody``), and the size limits (414, 413) checked first."""

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(
            exc.status_code, _CODES.get(exc.status_code, "error"), str(exc.detail), headers=dict(exc.headers or {})
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        where = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5])
        return error_response(422, "validation_error", f"invalid request: {where}", details)

    @app.exception_handler(UnknownUnitError)
    async def unknown_unit(_: Request, exc: UnknownUnitError) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(InputError)
    async def bad_input(_: Request, exc: InputError) -> JSONResponse:
        return error_response(422, "validation_error", str(exc))

    @app.exception_handler(ExplainerError)
    async def explainer_error(_: Request, exc: ExplainerError) -> JSONResponse:
        log.error("request failed: %s", exc)
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, "internal_error", "internal server error")

    @app.middleware("http")
    async def limit_size(request: Request, call_next: Any) -> Any:
        query = request.scope.get("query_string", b"")
        if "\x00" in request.scope.get("path", ""):  # query parameters: their patterns refuse NUL
            return error_response(422, "validation_error", "a NUL byte is not allowed in a path")
        if len(query) > MAX_QUERY_STRING:
            return error_response(414, "uri_too_long", f"the query string is longer than {MAX_QUERY_STRING} bytes")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return error_response(413, "payload_too_large", f"the request body is larger than {MAX_BODY} bytes")
        return await call_next(request)


def reject_unknown_params(request: Request) -> None:
    """422 for query parameters the route does not declare (a typo must not silently widen a search), and for
    a single-valued parameter given twice (``?domain=a&domain=b`` must not silently keep only the last)."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    known: set[str] = set()
    lists: set[str] = set()
    todo = [route.dependant]
    while todo:
        dep = todo.pop()
        for p in dep.query_params:
            known.add(p.alias)
            if field_annotation_is_sequence(p.field_info.annotation):
                lists.add(p.alias)
        todo.extend(dep.dependencies)
    details = [
        {"loc": ["query", name], "msg": "unknown parameter", "type": "extra_forbidden"}
        for name in sorted(set(request.query_params) - known)
    ]
    repeated = Counter(k for k, _ in request.query_params.multi_items() if k in known and k not in lists)
    details += [
        {"loc": ["query", name], "msg": "given more than once", "type": "repeated_parameter"}
        for name, n in sorted(repeated.items())
        if n > 1
    ]
    if details:
        raise RequestValidationError(details)
