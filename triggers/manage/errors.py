"""Answers of the management API: the success envelope ``{"response": ...}``
and the exception handler that turns every error into
``{"response": {"error": {"code", "message"}}}`` from the one error table
(``iolinker/errors.py``), with its status.

A minimal handler for this package only, until the project's DRF exception
handler exists (issue 13, the HTTP layer): that one replaces
``manage_exception_handler`` (``base.ManageView.get_exception_handler``). Views
translate domain exceptions into ``ApiError`` themselves, so any handler that
knows ``ApiError`` and DRF's exceptions answers them alike.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import set_rollback

from iolinker import errors, responses
from iolinker.errors import ErrorSpec

# DRF's exceptions by the error table's row (the first match wins).
_DRF_SPECS: tuple[tuple[type[Exception], ErrorSpec], ...] = (
    (exceptions.NotAuthenticated, errors.UNAUTHORIZED),
    (exceptions.AuthenticationFailed, errors.UNAUTHORIZED),
    (exceptions.PermissionDenied, errors.FORBIDDEN),
    (exceptions.NotFound, errors.NOT_FOUND),
    (exceptions.MethodNotAllowed, errors.METHOD_NOT_ALLOWED),
    (exceptions.ParseError, errors.INVALID_JSON),
    (exceptions.ValidationError, errors.INVALID_PARAMS),
    (exceptions.Throttled, errors.TOO_MANY_REQUESTS),
)


def _flatten(detail, prefix: str = "") -> list[str]:
    """A DRF error detail (nested lists and dicts of strings) as 'field: message' lines."""
    if isinstance(detail, dict):
        return [
            line
            for key, value in detail.items()
            for line in _flatten(value, f"{prefix}{key}: " if key != "non_field_errors" else prefix)
        ]
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [f"{prefix}{detail}"]


def _parts(exc: Exception, context: dict) -> tuple[ErrorSpec, str | None, dict]:
    if isinstance(exc, Http404):
        return errors.NOT_FOUND, "Not found", {}
    if isinstance(exc, DjangoPermissionDenied):
        return errors.FORBIDDEN, None, {}
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        message = "; ".join(_flatten(exc.detail)) or None
        if exc.status_code == 403:  # DRF's 401 without an authentication header
            return errors.FORBIDDEN, message, headers
        for kind, spec in _DRF_SPECS:
            if isinstance(exc, kind):
                return spec, message, headers
        return (errors.BAD_REQUEST if exc.status_code < 500 else errors.INTERNAL), message, headers
    request = context["request"]
    return responses.error_parts(exc, method=request.method, path=request.path)


def manage_exception_handler(exc: Exception, context: dict) -> Response:
    """Every exception raised in a management view, as the error envelope."""
    spec, message, headers = _parts(exc, context)
    set_rollback()
    body = {"response": {"error": {"code": spec.code, "message": message or spec.message}}}
    return Response(body, status=spec.status, headers=headers)


class EnvelopeRenderer(JSONRenderer):
    """Compact UTF-8 JSON; a success is wrapped as ``{"response": ...}`` (errors
    arrive wrapped from the exception handler)."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        response = (renderer_context or {}).get("response")
        if response is not None and not response.exception:
            data = {"response": data}
        return super().render(data, accepted_media_type, renderer_context)


class AnyJSONParser(JSONParser):
    """A body is JSON whatever its Content-Type says (as for the trigger API):
    ``curl -d`` without a content-type header works, and no answer is a 415."""

    media_type = "*/*"


class JSONOnlyNegotiation(BaseContentNegotiation):
    """JSON whatever the Accept header asks (never a 406), and any parser."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
