"""Bad input: every malformed request is answered with the error envelope and
its status, never a 500 or an HTML page, and stores nothing.

What tests/test_trigger_errors.py already covers (malformed JSON, non-object
JSON, NaN/huge floats, NUL and surrogate escapes, invalid UTF-8, body over the
limit, wrong verbs, too many query fields) is not repeated here. The cases the
test clients cannot send (a lying Content-Length, chunked bodies, raw bytes in
the request line and headers) go to a real server over raw sockets.
"""

import json

import pytest
from django.test import override_settings

from tests.conftest import make_api
from tests.support.clients import raw_http
from tests.support.processes import Platform
from triggers.models import AuthMode
from workflows.models import Execution

JSON = "application/json"
URL = "/v1/api/shop/order/async"


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == JSON
    error = response.json()["response"]["error"]
    assert set(error) == {"code", "message"} and error["message"]
    assert error["code"] == code
    return error


@pytest.mark.django_db
class TestThroughBothHandlers:
    """Through the production WSGI fast path and through Django's handler."""

    def test_deep_nesting_is_400(self, caller, open_api):
        for body in ("[" * 10_000 + "]" * 10_000, '{"a":' * 10_000 + "1" + "}" * 10_000):
            response = caller.post(URL, data=body, content_type=JSON)
            assert_envelope(response, 400, "requestError.invalidParams")
        assert not Execution.objects.exists()

    def test_moderate_nesting_is_accepted(self, caller, open_api):
        body = '{"a":' * 100 + "1" + "}" * 100
        assert caller.post(URL, data=body, content_type=JSON).status_code == 202

    def test_huge_integers_are_400_and_big_ones_are_kept_exactly(self, caller, open_api):
        response = caller.post(URL, data='{"a": ' + "9" * 5000 + "}", content_type=JSON)
        assert_envelope(response, 400, "requestError.invalidParams")
        assert not Execution.objects.exists()
        big = 2**70
        assert caller.post(URL, data=f'{{"a": {big}}}', content_type=JSON).status_code == 202
        assert Execution.objects.get().input["body"] == {"a": big}

    @pytest.mark.parametrize(
        "body",
        [b"", b"{", b'{"a": [1, 2', b'{"a": "unterminated', b'{"a": 1,', b'{"a": tru'],
        ids=["empty-is-object", "brace", "open-list", "open-string", "trailing-comma", "literal"],
    )
    def test_truncated_json_is_400(self, caller, open_api, body):
        response = caller.post(URL, data=body, content_type=JSON)
        if body == b"":
            assert response.status_code == 202  # an empty body is {} (README)
            return
        assert_envelope(response, 400, "requestError.invalidParams")
        assert not Execution.objects.exists()

    @pytest.mark.parametrize(
        "body", [b'{"a": "\x00"}', b"{\x00}", b'\x00{"a": 1}', b'{"a": "\xc3\x28"}', b"\xff\xfe{}"]
    )
    def test_raw_nul_bytes_and_invalid_utf8_are_400(self, caller, open_api, body):
        response = caller.post(URL, data=body, content_type=JSON)
        assert_envelope(response, 400, "requestError.invalidParams")
        assert not Execution.objects.exists()

    @pytest.mark.parametrize(
        "content_type",
        ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
    )
    def test_wrong_content_type_is_read_as_json_whatever_it_says(
        self, caller, open_api, content_type
    ):
        ok = caller.post(URL, data='{"a": 1}', content_type=content_type)
        assert ok.status_code == 202, ok.content
        form = caller.post(URL, data="a=1&b=2", content_type=content_type)
        assert_envelope(form, 400, "requestError.invalidParams")
        assert Execution.objects.count() == 1

    def test_oversized_headers_are_431(self, caller, open_api):
        with override_settings(IOLINKER_MAX_HEADER_BYTES=2048):
            response = caller.post(URL, data="{}", content_type=JSON, HTTP_USER_AGENT="x" * 4000)
            assert_envelope(response, 431, "requestError.headersTooLarge")
            response = caller.post(
                URL,
                data="{}",
                content_type=JSON,
                **{f"HTTP_X_FILLER_{i}": "y" * 100 for i in range(30)},
            )
            assert_envelope(response, 431, "requestError.headersTooLarge")
            fits = caller.post(URL, data="{}", content_type=JSON, HTTP_USER_AGENT="x" * 1000)
            assert fits.status_code == 202
        assert Execution.objects.count() == 1

    def test_oversized_query_string_is_414(self, caller, open_api):
        with override_settings(IOLINKER_MAX_QUERY_BYTES=2048):
            response = caller.post(f"{URL}?q={'a' * 3000}", data="{}", content_type=JSON)
            assert_envelope(response, 414, "requestError.queryTooLarge")
            fits = caller.post(f"{URL}?q={'a' * 1000}", data="{}", content_type=JSON)
            assert fits.status_code == 202
        assert Execution.objects.count() == 1

    @pytest.mark.parametrize("verb", ["PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "FOO"])
    def test_unknown_methods_are_405_envelopes(self, caller, open_api, verb):
        response = caller.generic(verb, URL, data="{}", content_type=JSON)
        assert_envelope(response, 405, "requestError.methodNotAllowed")
        assert response["Allow"] == "POST"
        assert not Execution.objects.exists()

    def test_head_is_405_without_a_body(self, caller, open_api):
        response = caller.head(URL)
        assert response.status_code == 405 and response["Allow"] == "POST"
        assert response.content == b""

    @pytest.mark.parametrize(
        "path",
        [
            "/v1/api/shop/../order/async",
            "/v1/api/../../admin/async",
            "/v1/api/%2e%2e/order/async",
            "/v1/api/shop%2forder/x/async",
            "/v1/api/shop/order%2f..%2f/async",
            "/v1/api/%D1%95hop/order/async",  # Cyrillic dze, looks like "s"
            "/v1/api/%EF%BD%93hop/order/async",  # fullwidth "s"
            "/v1/api/shop%E2%80%8B/order/async",  # zero-width space
            "/v1/api/SHOP/order/async",
            "/v1/api/shop/order/async/",
            "/v1/api/sh%00op/order/async",
            "/v1/api/%ff%fe/order/async",
            "/v1/api/shop/order/executions/..%2f..%2fadmin",
            "/v1/api/shop/order/executions/99999999999999999999999",
            "/v1/api/shop/order/executions/-1",
            "/v1/api/shop/order/executions/%D9%A1",  # Arabic-Indic digit one
        ],
    )
    def test_path_tricks_never_reach_another_api_or_a_500(self, caller, open_api, path):
        response = caller.post(path, data="{}", content_type=JSON)
        # (400 for a NUL on PostgreSQL: a name it cannot even look up.)
        assert response.status_code in (400, 404, 405), (path, response.content)
        assert response["Content-Type"] == JSON
        assert response.json()["response"]["error"]["code"].startswith("requestError.")
        assert not Execution.objects.exists()

    def test_an_encoded_slash_is_a_slash(self, caller, open_api):
        # WSGI servers decode the path: shop%2Forder is shop/order, the same API
        # (never another one).
        response = caller.post("/v1/api/shop%2Forder/async", data="{}", content_type=JSON)
        assert response.status_code == 202
        assert Execution.objects.get().api == open_api


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_raw_requests_to_a_real_server_get_envelopes_and_store_nothing(settings):
    """Over sockets, to granian serving the production WSGI application."""
    api = make_api(make_api_workflow(), module="shop", method="order", auth_mode=AuthMode.NONE)
    platform = Platform(qcluster=False).start()

    def request(line: str, *headers: str, body: bytes = b"", **kw) -> tuple[int, dict, bytes]:
        head = "\r\n".join([line, "Host: 127.0.0.1", "Connection: close", *headers]) + "\r\n\r\n"
        answer = raw_http(platform.port, head.encode("latin-1") + body, **kw)
        head_bytes, _, content = answer.partition(b"\r\n\r\n")
        if not head_bytes:
            return 0, {}, b""
        lines = head_bytes.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, content

    def envelope(status, fields, content, expected_status, code) -> None:
        assert status == expected_status, content[:300]
        assert fields["content-type"] == JSON
        assert json.loads(content)["response"]["error"]["code"] == code

    post = f"POST {URL} HTTP/1.1"
    try:
        # A Content-Length longer than the body sent (the client then stops sending).
        answer = request(post, "Content-Length: 100", body=b'{"a": 1}', half_close=True)
        if answer[0]:  # granian may also drop a half-closed connection unanswered
            envelope(*answer, 400, "requestError.badRequest")
        # A Content-Length over the limit: refused before reading.
        envelope(
            *request(post, "Content-Length: 99999999999", body=b"{}"),
            413,
            "requestError.payloadTooLarge",
        )
        # Chunked: read up to the limit, then refused.
        chunk = b"x" * 0x100000
        chunked = b"".join(b"100000\r\n" + chunk + b"\r\n" for _ in range(2)) + b"0\r\n\r\n"
        envelope(
            *request(post, "Transfer-Encoding: chunked", body=chunked),
            413,
            "requestError.payloadTooLarge",
        )
        envelope(
            *request(post, "Transfer-Encoding: chunked", body=b'4\r\n{"a"\r\n0\r\n\r\n'),
            400,
            "requestError.invalidParams",
        )
        # Bytes no client library sends: raw NUL and invalid UTF-8 in the body.
        for body in (b'{"a":"\x00"}', b'{"a":"\xff"}'):
            envelope(
                *request(post, f"Content-Length: {len(body)}", body=body),
                400,
                "requestError.invalidParams",
            )
        # Unknown verbs, even ones no client offers.
        for verb in ("PUT", "DELETE", "OPTIONS", "BREW"):
            envelope(
                *request(f"{verb} {URL} HTTP/1.1", "Content-Length: 2", body=b"{}"),
                405,
                "requestError.methodNotAllowed",
            )
        status, fields, content = request(f"HEAD {URL} HTTP/1.1")
        assert status == 405 and fields["allow"] == "POST" and content == b""
        # Path tricks as raw bytes: not normalised by the server, never a match.
        for path in ("/v1/api/shop/../order/async", "/v1/api/shop%2forder/x/async"):
            envelope(*request(f"POST {path} HTTP/1.1"), 404, "requestError.notFound")
        envelope(
            *request("POST /v1/api/ѕhop/order/async HTTP/1.1".encode().decode("latin-1")),
            404,
            "requestError.notFound",
        )
        # Oversized headers and query strings: ours (431/414 envelopes) up to what
        # the server itself refuses (a bare 431/414 without a body: it never
        # reaches the application).
        envelope(
            *request(post, "User-Agent: " + "a" * 20_000, "Content-Length: 2", body=b"{}"),
            431,
            "requestError.headersTooLarge",
        )
        # granian's own limits (2.8, documented in README and docs/reliability.md):
        # headers past about 500 KiB (its HTTP/1 buffer) or more than 100 fields
        # get its bare 431, no body; just under them, ours.
        envelope(
            *request(post, "User-Agent: " + "a" * 400_000, "Content-Length: 2", body=b"{}"),
            431,
            "requestError.headersTooLarge",
        )
        for big in ("User-Agent: " + "a" * 600_000, "User-Agent: " + "a" * 3_000_000):
            assert request(post, big)[::2] == (431, b"")
        # Host, Connection and Content-Length are three of the fields.
        fields_100 = [f"X-H{i}: v" for i in range(97)]
        status, _, content = request(post, *fields_100, "Content-Length: 2", body=b"{}")
        assert status == 202, content
        assert request(post, *fields_100, "X-H97: v", "Content-Length: 2", body=b"{}")[::2] == (
            431,
            b"",
        )
        envelope(
            *request(f"POST {URL}?q={'a' * 20_000} HTTP/1.1", "Content-Length: 2", body=b"{}"),
            414,
            "requestError.queryTooLarge",
        )
        assert request(f"POST {URL}?q={'a' * 300_000} HTTP/1.1")[0] == 414
        # A disallowed Host, and none at all (HTTP/1.0).
        status, fields, content = request(
            post.replace("1.1", "1.0"), "Content-Length: 2", half_close=True
        )  # no body either: 400 (or dropped), as before the front; not a 408 after 10 s
        assert status in (400, 0)
        assert Execution.objects.count() == 1  # the call with 100 header fields
        # The server still serves.
        status, _, content = request(post, "Content-Length: 2", body=b"{}")
        assert status == 202, content
        assert Execution.objects.filter(api=api).count() == 2
    finally:
        platform.stop()


def make_api_workflow():
    from tests.conftest import make_workflow

    return make_workflow("bad-input", [("out", "output", {"value": 1})])
