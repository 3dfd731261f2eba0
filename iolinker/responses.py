"""The one place that shapes HTTP responses of the public API.

Success: ``{"response": {...}}``. Errors: ``{"response": {"error": {"code", "message"}}}``.
Views raise ``ApiError``; ``api_endpoint`` turns it (and anything unexpected)
into the envelope. Django's handler400/403/404/500 answer with the same
envelope for URLs under ``/v1/``, so a caller never sees an HTML page or a
traceback.
"""

import functools
import json
import logging

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DataError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.views import defaults

from iolinker import errors
from iolinker.errors import ApiError, ErrorSpec

logger = logging.getLogger("iolinker.api")

_JSON = "application/json"


def _dumps(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def ok(payload: dict, *, status: int = 200, headers: dict | None = None) -> HttpResponse:
    return HttpResponse(
        _dumps({"response": payload}), status=status, content_type=_JSON, headers=headers
    )


def error(spec: ErrorSpec, message: str | None = None, *, headers=None) -> HttpResponse:
    body = {"response": {"error": {"code": spec.code, "message": message or spec.message}}}
    return HttpResponse(_dumps(body), status=spec.status, content_type=_JSON, headers=headers)


def api_endpoint(view):
    """Wrap a public API view: ApiError -> envelope, any other exception -> 500 envelope."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ApiError as exc:
            return error(exc.spec, exc.message, headers=exc.headers)
        except RequestDataTooBig:
            return error(errors.PAYLOAD_TOO_LARGE)
        except SuspiciousOperation as exc:  # e.g. too many query fields
            return error(errors.BAD_REQUEST, f"Bad request: {exc}")
        except DataError:
            # A value the database refuses (the checks above should catch them first).
            logger.warning("Database refused a value on %s", request.path, exc_info=True)
            return error(
                errors.INVALID_PARAMS, "The request contains a value that cannot be stored"
            )
        except (OperationalError, InterfaceError):
            # The database is down or unreachable: nothing was accepted, retry later.
            logger.exception("Database unavailable on %s %s", request.method, request.path)
            return error(errors.UNAVAILABLE)
        except Exception:
            logger.exception("Unhandled error on %s %s", request.method, request.path)
            return error(errors.INTERNAL)

    wrapper.csrf_exempt = True  # callers authenticate by header, never by cookie
    return wrapper


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/v1/")


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
