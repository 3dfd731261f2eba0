"""Django REST framework answers in our envelope: the exception handler, the JSON
renderer and the content negotiation of every DRF view (the caller API's,
triggers/http/, and the management API's, triggers/manage/).

``exception_handler`` (``REST_FRAMEWORK["EXCEPTION_HANDLER"]``) maps any
exception to a row of the error table (``iolinker.errors``): an ``ApiError`` and
Django's own exceptions through ``iolinker.responses.error_parts`` (the mapping
the WSGI fast path uses too), DRF's exceptions (missing credentials, a
permission, a 405, a throttle, a parse or validation error…) to their rows with
DRF's detail as the message; so a DRF answer carries the same envelope, code,
status and headers as every other answer. ``EnvelopeRenderer`` writes JSON
exactly as ``iolinker.responses`` does (compact, UTF-8) and wraps a success's
data as ``{"response": ...}`` (errors arrive wrapped); ``EnvelopeNegotiation``
answers with the view's first renderer whatever the caller's Accept header says
(no 406, no browsable API) and picks parsers as DRF does.
"""

import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder
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


class EnvelopeRenderer(BaseRenderer):
    """JSON as every answer of the platform has it (``responses.dumps``)."""

    media_type = "application/json"
    format = "json"
    charset = None  # Content-Type: application/json, as the other answers

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        response = (renderer_context or {}).get("response")
        if response is not None and not response.exception:
            data = {"response": data}
        return responses.dumps(data, encoder=JSONEncoder)


class EnvelopeNegotiation(DefaultContentNegotiation):
    """The view's first renderer whatever Accept says; parsers as DRF picks them."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def exception_handler(exc: Exception, context: dict) -> Response:
    """The one DRF exception handler: any exception -> its error table row, in
    the envelope (never None: nothing reaches DRF's or Django's 500 page)."""
    spec, message, headers = error_parts(exc, context)
    set_rollback()
    return Response(
        responses.error_envelope(spec, message), status=spec.status, headers=headers or None
    )


def error_parts(exc: Exception, context: dict) -> tuple[ErrorSpec, str | None, dict]:
    """(error spec, message, extra headers) of an exception raised in a DRF view."""
    if isinstance(exc, Http404):
        return errors.NOT_FOUND, "Not found", {}
    if isinstance(exc, DjangoPermissionDenied):
        return errors.FORBIDDEN, None, {}
    if not isinstance(exc, exceptions.APIException):
        request = context.get("request")
        method, path = (request.method, request.path) if request is not None else ("", "")
        return responses.error_parts(exc, method=method, path=path)
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.wait)))  # as triggers.throttle
    if isinstance(exc, exceptions.MethodNotAllowed) and context.get("view") is not None:
        headers["Allow"] = ", ".join(context["view"].allowed_methods)
    message = "; ".join(_flatten(exc.detail)) or None
    if exc.status_code == 403:  # DRF's 401 without an authentication scheme to name
        return errors.FORBIDDEN, message, headers
    for kind, spec in _DRF_SPECS:
        if isinstance(exc, kind):
            return spec, message, headers
    return (errors.BAD_REQUEST if exc.status_code < 500 else errors.INTERNAL), message, headers


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
