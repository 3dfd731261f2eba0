"""The Django REST framework parts of the caller API: the base view, the caller
authentication classes, the per-API rate throttle and the body parser.

* ``TriggerCallerAuthentication`` wraps the API's caller authentication
  (``triggers.http.transport.caller_check``: the API, its verb and switch, the
  IP allowlist, the credentials, the wrong-credential throttle before any
  password hash), in the order and with the refusal counts of the fast path;
  ``RunCallerAuthentication`` is the same for a run's status and cancel (the
  API's credentials, or the run's read key on an API without authentication).
* ``ApiRateThrottle`` is the API's rate limit (``triggers.throttle``). It raises
  the 429 itself rather than returning False: DRF's own ``Throttled`` would
  reword the message and recompute Retry-After, and the answer must stay the
  fast path's.
* ``TriggerBodyParser`` reads the body as JSON whatever the Content-Type, with
  the platform's limits (``parsing``, ``jsonbody``); ``request_json`` calls it
  on the Django request, past DRF's shortcut that takes a body without a
  Content-Length (a chunked one) for empty.
* ``CallerAPIView``: our renderer, negotiation and exception handler, no
  default ``Allow`` header (only a 405 carries one, as on the fast path), and a
  ``check_request`` hook for the checks that answer before authentication.
"""

from dataclasses import dataclass

from django.core.handlers.wsgi import get_bytes_from_wsgi
from rest_framework.authentication import BaseAuthentication
from rest_framework.parsers import BaseParser
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from iolinker.drf import EnvelopeNegotiation, EnvelopeRenderer
from triggers.http import parsing, transport
from triggers.http.jsonbody import json_body
from triggers.http.service import TriggerCall, api_execution


@dataclass(frozen=True, slots=True)
class ApiCaller:
    """``request.user`` of the caller API: whoever passed its API's checks."""

    api_id: int
    is_authenticated = True
    is_anonymous = False


@dataclass(frozen=True, slots=True)
class CheckedCall:
    """``request.auth`` of a trigger call: the API and what the caller sent."""

    api: object
    call: TriggerCall


class TriggerBodyParser(BaseParser):
    """A trigger's body: one JSON object, whatever the Content-Type says."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None) -> dict:
        # The Django request itself: it knows Content-Length, and a chunked body.
        return json_body(parsing.request_body(parser_context["request"]._request))


def request_json(request) -> dict:
    """The request's JSON body through the view's parser (see the module docstring)."""
    parser = request.negotiator.select_parser(request, request.parsers)
    return parser.parse(request.stream, request.content_type, request.parser_context)


def _remote_addr(request) -> str:
    return request.META.get("REMOTE_ADDR", "")


class TriggerCallerAuthentication(BaseAuthentication):
    """A trigger call's caller checks, before its rate limit (module docstring)."""

    def authenticate(self, request):
        kwargs = request.parser_context["kwargs"]
        call = transport.trigger_call_read(
            http_method=request.method,
            headers=request.headers,
            # Parsed there as Django parses request.GET (which nothing else reads).
            query_string=get_bytes_from_wsgi(request.META, "QUERY_STRING", ""),
            read_json=lambda: request_json(request),
            remote_addr=_remote_addr(request),
        )
        api = transport.caller_check(
            module=kwargs["module"],
            method=kwargs["method"],
            http_method=request.method,
            headers=request.headers,
            client_ip=call.client_ip,
        )
        return ApiCaller(api.pk), CheckedCall(api, call)


class RunCallerAuthentication(BaseAuthentication):
    """The caller of a run's status or cancel; ``request.auth`` is the run."""

    def authenticate(self, request):
        kwargs = request.parser_context["kwargs"]
        execution = api_execution(
            module=kwargs["module"],
            method=kwargs["method"],
            uid=kwargs["uid"],
            headers=request.headers,
            key=parsing.single_param(request._request.GET, "key") or "",
            client_ip=transport.caller_ip(
                _remote_addr(request), request.META.get("HTTP_X_FORWARDED_FOR")
            ),
        )
        return ApiCaller(execution.api_id), execution


class ApiRateThrottle(BaseThrottle):
    """The API's rate limit, all callers together (429 with Retry-After past it)."""

    def allow_request(self, request, view) -> bool:
        transport.caller_check_rate(api=request.auth.api)
        return True


class CallerAPIView(APIView):
    """A view of the caller API (see the module docstring). No authentication
    unless the view names its caller check (never DRF's session or Basic auth)."""

    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()
    parser_classes = (TriggerBodyParser,)
    renderer_classes = (EnvelopeRenderer,)
    content_negotiation_class = EnvelopeNegotiation
    # Documented by /v1/openapi.json (triggers/openapi/), per API: not in DRF's schema.
    schema = None

    @property
    def default_response_headers(self) -> dict:
        return {}

    def check_request(self, request, **kwargs) -> None:
        """Checks that answer before the caller's (the verb, malformed parameters)."""

    def initial(self, request, *args, **kwargs):
        self.check_request(request, **kwargs)
        super().initial(request, *args, **kwargs)
