"""Django REST framework answers in our envelope: the exception handler, the JSON
renderer and the content negotiation every DRF view uses (``REST_FRAMEWORK`` in
settings).

``exception_handler`` maps any exception to a row of the error table
(``iolinker.errors``): an ``ApiError`` and Django's own exceptions through
``iolinker.responses.error_parts`` (the mapping the WSGI fast path uses too),
DRF's exceptions (a 405, a throttle, missing credentials, a parse error…) to
their rows; so a DRF answer carries the same envelope, code, status and headers
as every other answer. ``EnvelopeRenderer`` writes JSON exactly as
``iolinker.responses`` does (compact, UTF-8); ``EnvelopeNegotiation`` answers
JSON whatever the caller's Accept header says (no 406, no browsable API). The
default parser is DRF's JSON one; the caller API's views read their bodies with
their own (``triggers.http.drf.TriggerBodyParser``: any Content-Type, the
platform's body limits).
"""

import math

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response
from rest_framework.views import set_rollback

from iolinker import errors, responses
from iolinker.errors import ErrorSpec

_BY_STATUS: dict[int, ErrorSpec] = {}
for _spec in vars(errors).values():
    if isinstance(_spec, ErrorSpec):
        _BY_STATUS.setdefault(_spec.status, _spec)  # the first row of each status


class EnvelopeRenderer(BaseRenderer):
    """JSON as every answer of the platform has it (``responses.dumps``)."""

    media_type = "application/json"
    format = "json"
    charset = None  # Content-Type: application/json, as the other answers

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        return b"" if data is None else responses.dumps(data)


class EnvelopeNegotiation(DefaultContentNegotiation):
    """The first renderer (ours) whatever Accept says; parsers by Content-Type,
    as DRF chooses them."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def exception_handler(exc: Exception, context: dict) -> Response:
    """The one DRF exception handler: any exception -> its error table row, in
    the envelope (never None: nothing reaches DRF's or Django's 500 page)."""
    spec, message, headers = drf_error_parts(exc, context)
    set_rollback()
    return Response(
        responses.error_envelope(spec, message),
        status=spec.status,
        headers=headers or None,
    )


def drf_error_parts(exc: Exception, context: dict) -> tuple[ErrorSpec, str | None, dict]:
    """(error spec, message, extra headers) of an exception raised in a DRF view."""
    request = context.get("request")
    if isinstance(exc, Http404):
        return errors.NOT_FOUND, "Not found", {}
    if isinstance(exc, DjangoPermissionDenied):
        return errors.FORBIDDEN, None, {}
    if not isinstance(exc, exceptions.APIException):
        method = request.method if request is not None else ""
        path = request.path if request is not None else ""
        return responses.error_parts(exc, method=method, path=path)
    if isinstance(exc, exceptions.MethodNotAllowed):
        view = context.get("view")
        allow = ", ".join(view.allowed_methods) if view is not None else ""
        return errors.METHOD_NOT_ALLOWED, None, {"Allow": allow} if allow else {}
    if isinstance(exc, exceptions.Throttled):
        wait = max(1, math.ceil(exc.wait)) if exc.wait is not None else 1
        return errors.TOO_MANY_REQUESTS, None, {"Retry-After": str(wait)}
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        if exc.status_code == 401:  # an authentication scheme to name (else DRF says 403)
            header = getattr(exc, "auth_header", None)
            return errors.UNAUTHORIZED, None, {"WWW-Authenticate": header} if header else {}
        return errors.FORBIDDEN, None, {}
    if isinstance(exc, exceptions.PermissionDenied):
        return errors.FORBIDDEN, None, {}
    if isinstance(exc, exceptions.NotFound):
        return errors.NOT_FOUND, "Not found", {}
    if isinstance(exc, exceptions.ParseError):
        return errors.INVALID_JSON, None, {}
    if isinstance(exc, exceptions.ValidationError):
        return errors.INVALID_PARAMS, _detail_text(exc.detail), {}
    spec = _BY_STATUS.get(exc.status_code, errors.BAD_REQUEST)
    return spec, _detail_text(exc.detail), {}


def _detail_text(detail) -> str:
    """A DRF error detail (a string, or lists/dicts of them) as one message."""
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_detail_text(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return "; ".join(_detail_text(item) for item in detail)
    return str(detail)
