"""Property-based fuzzing of the public HTTP API, in-process against the
production WSGI application (its trigger fast path, and Django for the rest):
whatever the verb, path, headers and body, no 500, and every error answer is
the JSON envelope."""

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_api
from tests.support.clients import WsgiClient
from triggers import services
from triggers.models import AuthMode

pytestmark = pytest.mark.django_db

VERBS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "BREW"]
NAMES = ["shop", "order", "secure", "find", "..", ".", "", "ѕhop", "ｓhop", "a" * 300]
ENDINGS = ["async", "sync", "executions", "cancel", "openapi.json", ""]
HEADER_NAMES = [
    "token",
    "user",
    "password",
    "idempotency-key",
    "content-type",
    "content-length",
    "user-agent",
    "x-forwarded-for",
    "host",
    "transfer-encoding",
]

segment = st.one_of(
    st.sampled_from(NAMES),
    st.text(max_size=12),
    st.integers(min_value=-1, max_value=2**70).map(str),
)
path = st.one_of(
    st.tuples(
        st.sampled_from(["shop", "nope"]), st.sampled_from(NAMES[:4]), st.sampled_from(ENDINGS)
    ).map(lambda p: "/v1/api/{}/{}/{}".format(*p)),
    st.tuples(st.sampled_from(["shop"]), st.sampled_from(["order", "secure", "find"]), segment).map(
        lambda p: "/v1/api/{}/{}/executions/{}".format(p[0], p[1], quote(p[2], safe=""))
    ),
    st.lists(segment, max_size=6).map(
        lambda parts: "/v1/" + "/".join(quote(p, safe="") for p in parts)
    ),
    st.just("/v1/openapi.json"),
)
query = st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4).map(
    lambda q: "&".join(f"{quote(k)}={quote(v)}" for k, v in q.items())
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
body = st.one_of(
    st.binary(max_size=200),
    json_value.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.text(), json_value, max_size=5).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"[" * 5000, b'{"a": NaN}', b'{"a": "\\u0000"}', b'{"a": 1e999}']),
)
header_value = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40),
    st.sampled_from(["", "0", "-1", "999999999999", "chunked", "application/json"]),
)
headers = st.dictionaries(st.sampled_from(HEADER_NAMES), header_value, max_size=5)


def environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


@pytest.fixture
def apis(echo_workflow):
    make_api(echo_workflow, auth_mode=AuthMode.NONE)
    make_api(echo_workflow, method="find", http_method="GET", auth_mode=AuthMode.NONE)
    token_api = make_api(echo_workflow, method="secure", auth_mode=AuthMode.TOKEN)
    services.api_set_token(api=token_api)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(verb=st.sampled_from(VERBS), path=path, query=query, headers=headers, body=body)
def test_no_request_gets_a_500_or_anything_but_an_envelope(apis, verb, path, query, headers, body):
    extra = {environ_key(name): value for name, value in headers.items()}
    content_type = extra.pop("CONTENT_TYPE", "application/json")
    extra.pop("CONTENT_LENGTH", None)  # the factory sets the true one
    url = f"{path}?{query}" if query else path
    response = WsgiClient().generic(verb, url, data=body, content_type=content_type, **extra)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if verb == "HEAD" or response.status_code in (301, 302, 304):
        return
    assert response["Content-Type"] == "application/json", response.content[:300]
    document = json.loads(response.content)
    if response.status_code >= 400:
        error = document["response"]["error"]
        assert set(error) == {"code", "message"}
        assert error["code"].startswith("requestError.") and error["message"]
    elif path != "/v1/openapi.json":
        assert isinstance(document["response"], dict)
