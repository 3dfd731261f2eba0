"""Django REST framework as the API framework: every row of the error table is
answered by DRF views in our envelope, DRF's own exceptions map to their rows,
the caller API's views are DRF views that answer JSON whatever Accept says, and
the production fast path for /async never enters the DRF view."""

import io
import json
import logging

import pytest
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError
from django.http import Http404
from django.test import Client
from django.urls import resolve
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from iolinker import errors, responses
from iolinker.errors import ApiError, ErrorSpec
from tests.support.clients import WsgiClient
from triggers.http import views
from triggers.http.drf import CallerAPIView
from workflows.models import Execution

ROWS = {name: spec for name, spec in vars(errors).items() if isinstance(spec, ErrorSpec)}


def _answer(raise_exc, *, base=APIView, method="get", **attrs):
    """What a DRF view that raises ``raise_exc`` answers (settings' defaults
    unless ``base`` or ``attrs`` say otherwise)."""

    def handler(self, request):
        raise raise_exc

    # An open view: the settings' closed permission default is tested on its own.
    attrs = {"permission_classes": (), **attrs}
    view = type("Raising", (base,), {"get": handler, "post": handler, **attrs}).as_view()
    # (Views that set EnvelopeNegotiation answer JSON whatever Accept says; the
    # settings' default negotiation would answer an HTML-only Accept with a 406.)
    accept = "text/html" if base is CallerAPIView else "application/json"
    request = getattr(APIRequestFactory(), method)("/v1/anything", HTTP_ACCEPT=accept)
    response = view(request)
    response.render()
    return response


def test_a_success_is_wrapped_in_the_envelope_by_the_renderer():
    from rest_framework.response import Response

    view = type(
        "Ok",
        (APIView,),
        {"get": lambda self, request: Response({"n": "☃"}), "permission_classes": ()},
    ).as_view()
    response = view(APIRequestFactory().get("/v1/anything"))
    response.render()
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.content == responses.ok_body({"n": "☃"})


def test_the_error_table_has_the_rows_this_test_walks():
    assert len(ROWS) >= 20 and "UNAVAILABLE" in ROWS and "TOO_MANY_REQUESTS" in ROWS


@pytest.mark.parametrize("name", sorted(ROWS))
@pytest.mark.parametrize("base", [APIView, CallerAPIView], ids=["defaults", "caller-view"])
def test_every_row_of_the_error_table_is_answered_by_drf_in_the_envelope(name, base):
    spec = ROWS[name]
    response = _answer(ApiError(spec), base=base)
    assert response.status_code == spec.status
    assert response["Content-Type"] == "application/json"
    assert response.content == responses.error_body(spec)
    assert json.loads(response.content) == {
        "response": {"error": {"code": spec.code, "message": spec.message}}
    }


@pytest.mark.parametrize("name", sorted(ROWS))
def test_a_reworded_row_keeps_its_code_status_and_headers(name):
    spec = ROWS[name]
    response = _answer(ApiError(spec, "Précis: ☃", headers={"Retry-After": "7"}))
    assert response.status_code == spec.status
    assert response["Retry-After"] == "7"
    assert response.content == responses.error_body(spec, "Précis: ☃")
    assert "☃".encode() in response.content  # UTF-8, not \u escapes


class _TokenScheme(BaseAuthentication):
    def authenticate(self, request):
        return None

    def authenticate_header(self, request):
        return 'Token realm="api"'


@pytest.mark.parametrize(
    ("exc", "spec", "message", "headers", "attrs"),
    [
        (
            exceptions.MethodNotAllowed("PUT"),
            errors.METHOD_NOT_ALLOWED,
            'Method "PUT" not allowed.',
            {"Allow": "GET, POST, HEAD, OPTIONS"},
            {},
        ),
        (
            exceptions.Throttled(wait=2.1),
            errors.TOO_MANY_REQUESTS,
            "Request was throttled. Expected available in 3 seconds.",
            {"Retry-After": "3"},
            {},
        ),
        (
            exceptions.NotAuthenticated(),  # no scheme to name: DRF makes it a 403
            errors.FORBIDDEN,
            "Authentication credentials were not provided.",
            {},
            {},
        ),
        (
            exceptions.NotAuthenticated(),
            errors.UNAUTHORIZED,
            "Authentication credentials were not provided.",
            {"WWW-Authenticate": 'Token realm="api"'},
            {"authentication_classes": [_TokenScheme]},
        ),
        (
            exceptions.AuthenticationFailed("Invalid token."),
            errors.UNAUTHORIZED,
            "Invalid token.",
            {"WWW-Authenticate": 'Token realm="api"'},
            {"authentication_classes": [_TokenScheme]},
        ),
        (
            exceptions.PermissionDenied("Needs the change permission"),
            errors.FORBIDDEN,
            "Needs the change permission",
            {},
            {},
        ),
        (exceptions.NotFound(), errors.NOT_FOUND, "Not found.", {}, {}),
        (Http404("no such thing"), errors.NOT_FOUND, "Not found", {}, {}),
        (DjangoPermissionDenied(), errors.FORBIDDEN, None, {}, {}),
        (exceptions.ParseError(), errors.INVALID_JSON, "Malformed request.", {}, {}),
        (
            exceptions.ValidationError(
                {"name": ["This field is required."], "non_field_errors": ["Pick one."]}
            ),
            errors.INVALID_PARAMS,
            "name: This field is required.; Pick one.",
            {},
            {},
        ),
        (
            exceptions.UnsupportedMediaType("text/csv"),  # (no 415 row: the 400 one)
            errors.BAD_REQUEST,
            'Unsupported media type "text/csv" in request.',
            {},
            {},
        ),
        (OperationalError("server closed the connection"), errors.UNAVAILABLE, None, {}, {}),
        (RuntimeError("a bug"), errors.INTERNAL, None, {}, {}),
    ],
)
def test_drf_and_django_exceptions_answer_their_rows(exc, spec, message, headers, attrs):
    response = _answer(exc, **attrs)
    assert response.status_code == spec.status
    assert response.content == responses.error_body(spec, message)
    for name, value in headers.items():
        assert response[name] == value
    assert b"Traceback" not in response.content and b"<html" not in response.content


def test_drf_405_names_the_view_s_methods_in_allow():
    view = type(
        "OnlyGet", (APIView,), {"get": lambda self, request: None, "permission_classes": ()}
    ).as_view()
    response = view(APIRequestFactory().delete("/v1/anything"))
    response.render()
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD, OPTIONS"
    assert response.content == responses.error_body(
        errors.METHOD_NOT_ALLOWED, 'Method "DELETE" not allowed.'
    )


def test_an_unexpected_error_is_logged_and_answers_500(caplog):
    with caplog.at_level(logging.ERROR, logger="iolinker.api"):
        response = _answer(RuntimeError("a bug"))
    assert response.status_code == 500
    assert response.content == responses.error_body(errors.INTERNAL)
    assert "Unhandled error on GET /v1/anything" in caplog.text


@pytest.mark.parametrize(
    ("path", "view"),
    [
        ("/v1/api/m/n/async", views.TriggerAsyncView),
        ("/v1/api/m/n/sync", views.TriggerSyncView),
        ("/v1/api/m/n/executions/1", views.ExecutionStatusView),
        ("/v1/api/m/n/executions/1/cancel", views.ExecutionCancelView),
    ],
)
def test_the_caller_api_is_served_by_drf_views(path, view):
    assert resolve(path).func.cls is view
    assert issubclass(view, APIView)


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["text/html", "application/xml", "*/*", ""])
def test_the_django_stack_answers_json_whatever_accept_says(client, open_api, accept):
    answer = client.post(
        "/v1/api/shop/order/async",
        data="{}",
        content_type="application/json",
        HTTP_ACCEPT=accept,
    )
    assert answer.status_code == 202
    assert answer["Content-Type"] == "application/json"
    assert "Allow" not in answer and "Vary" not in answer
    missing = client.get("/v1/api/shop/none/async", HTTP_ACCEPT=accept)
    assert missing.status_code == 404 and missing["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_the_fast_path_never_enters_the_drf_view(open_api, monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("the DRF view ran on the fast path")

    monkeypatch.setattr(views.TriggerAsyncView, "dispatch", refuse)
    monkeypatch.setattr(views.TriggerAsyncView, "initial", refuse)
    answer = WsgiClient().post("/v1/api/shop/order/async", data="{}", content_type="text/plain")
    assert answer.status_code == 202


def _chunked_environ(path: str, body: bytes) -> dict:
    """A request as granian hands a chunked body over: no Content-Length,
    wsgi.input_terminated."""
    environ = APIRequestFactory().post(path, data=body, content_type="text/plain").environ
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input"] = io.BytesIO(body)
    environ["wsgi.input_terminated"] = True
    return environ


@pytest.mark.django_db
@pytest.mark.parametrize("stack", ["wsgi", "django"])
def test_a_chunked_body_reaches_the_run_on_both_stacks(open_api, stack, monkeypatch):
    import iolinker.wsgi

    if stack == "django":  # Django's handler (the DRF view) instead of the fast path
        monkeypatch.setattr(iolinker.wsgi, "application", iolinker.wsgi.django_application)
    environ = _chunked_environ("/v1/api/shop/order/async", b'{"n": 1}')
    assert WsgiClient().send(environ).status_code == 202
    assert Execution.objects.get().input["body"] == {"n": 1}


def _send(stack, verb: str, path: str, **kwargs):
    client = WsgiClient() if stack == "wsgi" else Client()
    return client.generic(verb, path, **kwargs)


_LONG = "x" * 9000
_RUN = "/v1/api/shop/secure/executions/12345"
PARITY_CASES = {
    "unknown API": ("POST", "/v1/api/shop/none/async", {}),
    "odd verb": ("PROPFIND", "/v1/api/shop/secure/async", {}),
    "HEAD": ("HEAD", "/v1/api/shop/secure/async", {}),
    "OPTIONS": ("OPTIONS", "/v1/api/shop/secure/async", {}),
    "no token": ("POST", "/v1/api/shop/secure/async", {}),
    "wrong token": ("POST", "/v1/api/shop/secure/async", {"headers": {"token": "no"}}),
    "bad query before credentials": (
        "POST",
        "/v1/api/shop/secure/async?a=%00",
        {"headers": {"token": "no"}},
    ),
    "large headers before an unknown API": (
        "POST",
        "/v1/api/shop/none/async",
        {"headers": {"x-big": _LONG}},
    ),
    "bad JSON": ("POST", "/v1/api/shop/secure/async", {"data": b"{", "right": True}),
    "not an object": ("POST", "/v1/api/shop/secure/async", {"data": b"[1]", "right": True}),
    "bad key": (
        "POST",
        "/v1/api/shop/secure/async",
        {"headers": {"idempotency-key": "\x7f"}, "right": True},
    ),
    "sync odd verb": ("PROPFIND", "/v1/api/shop/secure/sync", {}),
    "sync without token": ("POST", "/v1/api/shop/secure/sync", {}),
    "sync unknown API": ("POST", "/v1/api/shop/none/sync", {}),
    "status by POST": ("POST", f"{_RUN}", {}),
    "status by HEAD": ("HEAD", f"{_RUN}", {}),
    "status bad wait before credentials": ("GET", f"{_RUN}?wait=x", {"headers": {"token": "no"}}),
    "status repeated key": ("GET", f"{_RUN}?key=a&key=b", {}),
    "status wrong token": ("GET", f"{_RUN}", {"headers": {"token": "no"}}),
    "status unknown run": ("GET", f"{_RUN}", {"right": True}),
    "cancel by GET": ("GET", f"{_RUN}/cancel", {}),
    "cancel without token": ("POST", f"{_RUN}/cancel", {}),
    "cancel unknown run": ("POST", f"{_RUN}/cancel", {"right": True}),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_both_stacks_answer_alike_byte_for_byte(token_api, case, settings):
    settings.IOLINKER_MAX_HEADER_BYTES = 4096
    token_api.sync_enabled = True
    token_api.save()
    verb, path, kwargs = PARITY_CASES[case]
    headers = dict(kwargs.get("headers", {}))
    if kwargs.get("right"):
        headers["token"] = token_api.plain_token
    answers = [
        _send(stack, verb, path, data=kwargs.get("data", b""), headers=headers)
        for stack in ("wsgi", "django")
    ]
    wsgi, django = answers
    assert wsgi.status_code == django.status_code >= 400
    if verb != "HEAD":  # (Django's test Client drops a HEAD answer's body; servers do too)
        assert wsgi.content == django.content
    assert dict(wsgi.items()) == dict(django.items())
    assert Execution.objects.count() == 0


@pytest.mark.django_db
def test_drf_defaults_are_closed_a_view_that_forgets_gets_no_basic_auth_and_staff_only():
    """A DRF view that names no authentication or permission must not fall back to
    DRF's session + Basic auth (admin passwords checked without the login
    throttle) and allow-all."""
    from django.contrib.auth.models import User
    from django.test import RequestFactory
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class Forgetful(APIView):
        def get(self, request):
            return Response({"ok": True})

    User.objects.create_superuser("boss", "", "pw-boss")
    basic = "Basic " + __import__("base64").b64encode(b"boss:pw-boss").decode()
    request = RequestFactory().get("/v1/x", HTTP_AUTHORIZATION=basic)
    response = Forgetful.as_view()(request)
    response.render()
    assert response.status_code == 403, response.content


def test_the_fast_path_mirrors_the_installed_django():
    """triggers/http/django_mirror.py repeats Django internals for the WSGI fast
    path: upgrading Django fails here until the mirror is checked against the new
    version (and its DJANGO_VERSION moved)."""
    import django

    from triggers.http.django_mirror import DJANGO_VERSION

    assert django.VERSION[:2] == DJANGO_VERSION
