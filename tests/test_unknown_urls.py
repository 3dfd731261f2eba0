"""URLs under /v1 that Django's resolver never matches (`/v1` itself, a path
starting with `//v1/`) answer the JSON 404 envelope like any unknown /v1/ URL,
never Django's HTML page; through the production application (whose trigger path
answers before Django) and through Django's handler."""

import json

import pytest
from django.test import RequestFactory

from iolinker import wsgi


def answer(app, method: str, path: str) -> tuple[str, dict, bytes]:
    environ = RequestFactory().generic(method, "/", data=b"{}").environ
    environ["PATH_INFO"] = path  # as a server gives it; the test client would parse "//v1"
    started = []
    body = b"".join(
        app(environ, lambda status, headers, exc_info=None: started.extend([status, headers]))
    )
    return started[0], dict(started[1]), body


@pytest.mark.django_db
@pytest.mark.parametrize("app", [wsgi.application, wsgi.django_application], ids=["wsgi", "django"])
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "path", ["/v1", "//v1/x", "//v1/api/shop/order/async", "///v1/openapi.json", "/v1/nothing"]
)
def test_v1_urls_django_cannot_resolve_answer_the_json_404(open_api, app, method, path):
    status, headers, body = answer(app, method, path)
    assert status.startswith("404"), (status, body[:200])
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "response": {"error": {"code": "requestError.notFound", "message": "Not found"}}
    }


@pytest.mark.django_db
def test_other_unknown_urls_keep_djangos_page():
    status, headers, _ = answer(wsgi.application, "GET", "/v1x")
    assert status.startswith("404") and headers["Content-Type"].startswith("text/html")
