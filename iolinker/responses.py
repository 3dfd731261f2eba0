"""The one place that shapes HTTP responses of the public API.

Success: ``{"response": {...}}``. Errors: ``{"response": {"error": {"code", "message"}}}``.
Views raise ``ApiError``; ``api_endpoint`` turns it (and anything unexpected)
into the envelope, and so does the DRF exception handler (``iolinker.drf``).
Django's handler400/403/404/500 answer with the same envelope for URLs under
``/v1/``, so a caller never sees an HTML page or a traceback.
"""

import functools
import json
import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views import defaults

from iolinker import errors
from iolinker.errors import ApiError, ErrorSpec

logger = logging.getLogger("iolinker.api")

_JSON = "application/json"


def dumps(payload: dict, *, encoder: type[json.JSONEncoder] | None = None) -> bytes:
    """JSON as every answer has it: compact, UTF-8 (also DRF's, iolinker/drf.py,
    whose ``encoder`` also writes dates, decimals and uuids)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, cls=encoder).encode()


def ok_body(payload: dict) -> bytes:
    return dumps({"response": payload})


def ok(payload: dict, *, status: int = 200, headers: dict | None = None) -> HttpResponse:
    return HttpResponse(ok_body(payload), status=status, content_type=_JSON, headers=headers)


def document(body: bytes) -> HttpResponse:
    """A JSON document as is, outside the envelope (the OpenAPI document)."""
    return HttpResponse(body, content_type=_JSON)


def error(spec: ErrorSpec, message: str | None = None, *, headers=None) -> HttpResponse:
    return HttpResponse(
        error_body(spec, message), status=spec.status, content_type=_JSON, headers=headers
    )


# Sent with every public API response, whichever path answered it (the Django
# views get them from SecurityMiddleware and XFrameOptionsMiddleware; the WSGI
# trigger path in iolinker/wsgi.py adds them itself).
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)


def error_parts(exc: Exception, *, method: str, path: str) -> tuple[ErrorSpec, str | None, dict]:
    """The one mapping from an exception raised while serving an API call to
    (error spec, message, extra headers); unexpected ones are logged."""
    if isinstance(exc, ApiError):
        return exc.spec, exc.message, exc.headers
    domain = errors.domain_api_error(exc)  # workflows' own errors (errors.DOMAIN_ERRORS)
    if domain is not None:
        return domain.spec, domain.message, {}
    if isinstance(exc, RequestDataTooBig):
        return errors.PAYLOAD_TOO_LARGE, None, {}
    if isinstance(exc, SuspiciousOperation):  # e.g. too many query fields
        return errors.BAD_REQUEST, f"Bad request: {exc}", {}
    if isinstance(exc, DataError):
        # A value the database refuses (the request checks should catch them first).
        logger.warning("Database refused a value on %s", path, exc_info=exc)
        return errors.INVALID_PARAMS, "The request contains a value that cannot be stored", {}
    if isinstance(exc, IntegrityError):
        # Two requests made the same thing at once (a unique name, module and
        # method): the loser learns it conflicts, never a 500.
        logger.warning("Integrity conflict on %s %s", method, path, exc_info=exc)
        return errors.CONFLICT, "Conflicts with a concurrent change: read the current state", {}
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is down or unreachable: nothing was accepted, retry later.
        logger.error("Database unavailable on %s %s", method, path, exc_info=exc)
        return errors.UNAVAILABLE, None, {}
    logger.error("Unhandled error on %s %s", method, path, exc_info=exc)
    return errors.INTERNAL, None, {}


def error_envelope(spec: ErrorSpec, message: str | None = None) -> dict:
    """The error envelope of a row of the error table (optionally reworded)."""
    return {"response": {"error": {"code": spec.code, "message": message or spec.message}}}


def error_body(spec: ErrorSpec, message: str | None = None) -> bytes:
    return dumps(error_envelope(spec, message))


def api_endpoint(view):
    """Wrap a public API view: ApiError -> envelope, any other exception -> 500 envelope."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except Exception as exc:
            spec, message, headers = error_parts(exc, method=request.method, path=request.path)
            return error(spec, message, headers=headers)

    wrapper.csrf_exempt = True  # callers authenticate by header, never by cookie
    return wrapper


def is_api_path(path: str) -> bool:
    """Under /v1 (``/v1`` itself and ``//v1/…`` too: Django resolves neither, and
    their 404 must be the envelope like any other unknown /v1/ URL's)."""
    path = "/" + path.lstrip("/")
    return path == "/v1" or path.startswith("/v1/")


def _is_api(request: HttpRequest) -> bool:
    return is_api_path(request.path)


def handler400(request, exception=None):
    if _is_api(request):
        return error(errors.BAD_REQUEST)
    return defaults.bad_request(request, exception)


def handler403(request, exception=None):
    if _is_api(request):
        return error(errors.FORBIDDEN)
    return defaults.permission_denied(request, exception)


def handler404(request, exception=None):
    if _is_api(request):
        return error(errors.NOT_FOUND, "Not found")
    return defaults.page_not_found(request, exception)


def handler500(request):
    if _is_api(request):
        return error(errors.INTERNAL)
    return defaults.server_error(request)
