"""The RSGI front (iolinker/server.py) in-process, with a stand-in for granian's
protocol object: the environ it builds (repeated Cookie headers joined with "; "),
how it reads bodies (an over-limit one left unread closes the connection), how many
request threads it starts, and how it sends lists, Django responses and streaming
answers (close() called in the request thread; a client that never reads holds the
thread at most IOLINKER_SEND_TIMEOUT). The real server is tested in
tests/reliability/test_slow_clients.py."""

import asyncio
import json
import threading
from types import SimpleNamespace

import pytest

from iolinker.server import RsgiFront


class FakeProto:
    """granian's RSGIHTTPProtocol as the front uses it: the body as chunks (None
    stands for a broken stream: granian yields b"" in its place), answers recorded."""

    def __init__(self, chunks=(b"",), *, whole: bytes | None = None):
        self.chunks, self.whole = list(chunks), whole
        self.answer, self.streamed = None, []

    async def __call__(self):
        return self.whole if self.whole is not None else b"".join(c or b"" for c in self.chunks)

    def __aiter__(self):
        return self._iterate()

    async def _iterate(self):
        for chunk in self.chunks:
            yield b"" if chunk is None else chunk
        yield b""

    def response_bytes(self, status, headers, body):
        self.answer = (status, headers, body)

    def response_stream(self, status, headers):
        self.answer = (status, headers, None)
        proto = self

        class Stream:
            async def send_bytes(self, data):
                proto.streamed.append(data)

        return Stream()


class FakeHeaders:
    """granian's RSGI headers: a value of None stands for bytes granian cannot
    decode (not visible ASCII), which it leaves out of items() and get_all() but
    still counts among the names (seen on granian 2.8)."""

    def __init__(self, fields):
        self.fields = list(fields)

    def items(self):
        return [(n, v) for n, v in self.fields if v is not None]

    def keys(self):
        return list(dict.fromkeys(n for n, _ in self.fields))

    def __len__(self):
        return len(self.keys())

    def get_all(self, name):
        return [v for n, v in self.fields if n == name and v is not None]


def scope(method="POST", path="/v1/api/shop/order/async", headers=(), query="", version="1.1"):
    return SimpleNamespace(
        proto="http",
        http_version=version,
        server="127.0.0.1:8000",
        client="10.1.2.3:5555",
        scheme="http",
        method=method,
        path=path,
        query_string=query,
        headers=FakeHeaders(headers),
    )


def serve(app, a_scope, proto) -> None:
    front = RsgiFront(app)
    loop = asyncio.new_event_loop()
    try:
        front.__rsgi_init__(loop)
        loop.run_until_complete(front.__rsgi__(a_scope, proto))
    finally:
        front.__rsgi_del__(loop)
        loop.close()


def echo_environ(seen: dict):
    def app(environ, start_response):
        seen.update(environ, body=environ["wsgi.input"].read(), thread=threading.get_ident())
        start_response("202 Accepted", [("Content-Type", "application/json")])
        return [b'{"ok":', b"1}"]

    return app


def test_the_environ_drops_underscore_headers_and_keeps_wsgi_strings():
    seen = {}
    headers = [
        ("host", "a.example"),
        ("x-forwarded-for", "198.51.100.1"),
        ("x_forwarded_for", "203.0.113.7"),
        ("x-forwarded_for", "203.0.113.8"),
        ("accept", "a"),
        ("accept", "b"),
        ("cookie", "sessionid=1"),
        ("cookie", "csrftoken=2"),
        ("content-type", "application/json"),
        ("content-length", "2"),
    ]
    proto = FakeProto(whole=b"{}")
    serve(echo_environ(seen), scope(path="/v1/é", headers=headers, query="q=é"), proto)
    assert seen["HTTP_X_FORWARDED_FOR"] == "198.51.100.1"
    assert not [k for k in seen if "FORWARDED" in k and k != "HTTP_X_FORWARDED_FOR"]
    assert seen["HTTP_ACCEPT"] == "a,b"  # repeated fields joined, as granian's WSGI did
    assert seen["HTTP_COOKIE"] == "sessionid=1; csrftoken=2"  # RFC 6265 §5.4
    assert (seen["CONTENT_TYPE"], seen["CONTENT_LENGTH"]) == ("application/json", "2")
    assert "HTTP_CONTENT_LENGTH" not in seen
    assert seen["PATH_INFO"] == "/v1/é".encode().decode("latin-1")  # PEP 3333
    assert seen["QUERY_STRING"] == "q=é".encode().decode("latin-1")
    assert (seen["REMOTE_ADDR"], seen["SERVER_NAME"], seen["SERVER_PORT"]) == (
        "10.1.2.3",
        "127.0.0.1",
        "8000",
    )
    assert seen["body"] == b"{}" and seen["thread"] != threading.get_ident()
    assert proto.answer == (202, [("Content-Type", "application/json")], b'{"ok":1}')


def test_a_chunked_body_is_given_whole_with_its_length():
    seen = {}
    proto = FakeProto([b'{"a"', b": 1}"])
    serve(echo_environ(seen), scope(headers=[("transfer-encoding", "chunked")]), proto)
    assert seen["body"] == b'{"a": 1}' and seen["CONTENT_LENGTH"] == "8"
    assert proto.answer[0] == 202


@pytest.mark.parametrize("chunks", [[b'{"a"', None], [None], [b"{", None, b"}"]])
def test_a_broken_chunked_body_is_400_and_never_reaches_the_application(chunks):
    seen = {}
    proto = FakeProto(chunks)
    serve(echo_environ(seen), scope(headers=[("transfer-encoding", "chunked")]), proto)
    assert not seen
    status, headers, body = proto.answer
    assert status == 400 and ("Connection", "close") in headers
    assert json.loads(body)["response"]["error"]["code"] == "requestError.badRequest"


def test_a_body_shorter_than_its_content_length_is_400():
    seen = {}
    proto = FakeProto(whole=b"{")
    serve(echo_environ(seen), scope(headers=[("content-length", "2")]), proto)
    assert not seen and proto.answer[0] == 400


def test_over_the_limit_under_v1_the_application_answers_in_its_own_order(settings):
    seen = {}
    too_long = str(settings.IOLINKER_MAX_BODY_BYTES + 1)
    proto = FakeProto(whole=b"never read")
    serve(echo_environ(seen), scope(headers=[("content-length", too_long)]), proto)
    assert seen["CONTENT_LENGTH"] == too_long and seen["body"] == b""
    # The rest of the body is never read: the answer closes the connection.
    assert ("Connection", "close") in proto.answer[1]
    # Elsewhere (the admin) the front answers 413 itself.
    seen.clear()
    too_long = str(settings.IOLINKER_MAX_UPLOAD_BYTES + 1)
    proto = FakeProto(whole=b"never read")
    serve(echo_environ(seen), scope(path="/admin/x", headers=[("content-length", too_long)]), proto)
    assert not seen and proto.answer[0] == 413


def test_a_streaming_answer_is_sent_chunk_by_chunk_and_closed_in_its_thread():
    closed = []

    class Streaming:
        def __init__(self):
            self.thread = None

        def __iter__(self):
            self.thread = threading.get_ident()
            yield b"a"
            yield b""
            yield b"bc"

        def close(self):
            closed.append(threading.get_ident())

    result = Streaming()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    proto = FakeProto()
    serve(app, scope(method="GET", path="/admin/export"), proto)
    assert proto.answer == (200, [("Content-Type", "text/plain")], None)
    assert proto.streamed == [b"a", b"bc"]
    assert closed == [result.thread]


def test_an_over_limit_chunked_v1_body_is_cut_and_its_answer_closes_the_connection(settings):
    seen = {}
    limit = settings.IOLINKER_MAX_BODY_BYTES
    proto = FakeProto([b"x" * limit, b"yy", b"never read"])
    serve(echo_environ(seen), scope(headers=[("transfer-encoding", "chunked")]), proto)
    assert len(seen["body"]) == limit + 1  # what the application needs to answer 413
    assert ("Connection", "close") in proto.answer[1]
    # A body within the limit keeps the connection.
    proto = FakeProto([b"{}"])
    serve(echo_environ(seen), scope(headers=[("transfer-encoding", "chunked")]), proto)
    assert ("Connection", "close") not in proto.answer[1]


def test_a_client_that_never_takes_a_streamed_answer_frees_the_thread(settings):
    """granian's send waits while the client does not read: the request thread
    stops sending after IOLINKER_SEND_TIMEOUT and closes the answer."""
    settings.IOLINKER_SEND_TIMEOUT = 1
    closed, produced = [], []

    class Endless:
        def __iter__(self):
            while True:
                produced.append(1)
                yield b"chunk"

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Endless()

    class Stuck(FakeProto):
        def response_stream(self, status, headers):
            self.answer = (status, headers, None)

            class Stream:
                async def send_bytes(self, data):
                    await asyncio.Event().wait()  # the client never reads

            return Stream()

    proto = Stuck()
    serve(app, scope(method="GET", path="/admin/export"), proto)
    assert closed == [True]  # serve() returned: the thread is free, the answer closed
    assert len(produced) == 1  # the first chunk never went out: nothing more was made


def test_an_application_error_is_the_500_envelope():
    def app(environ, start_response):
        raise RuntimeError("boom")

    proto = FakeProto()
    serve(app, scope(method="GET"), proto)
    status, _, body = proto.answer
    assert status == 500
    assert json.loads(body)["response"]["error"]["code"] == "serverError.internal"


def test_a_header_value_granian_cannot_decode_is_400_under_v1_and_never_vanishes():
    """granian hands over no value for a header of non-ASCII bytes: an
    Idempotency-Key of such bytes used to vanish, and the call started a second
    run (schemathesis found it). Under /v1/ it is refused, naming the header."""
    seen = {}
    for headers in (
        [("idempotency-key", None)],
        [("x_odd", "1"), ("x_odd", "2"), ("token", None)],  # a repeated dropped name too
    ):
        proto = FakeProto(whole=b"{}")
        serve(echo_environ(seen), scope(headers=[("host", "a"), *headers]), proto)
        status, fields, body = proto.answer
        assert status == 400 and ("Connection", "close") in fields
        error = json.loads(body)["response"]["error"]
        assert error["code"] == "requestError.badRequest"
        assert headers[-1][0] in error["message"]
        assert not seen  # the application never ran


def test_outside_v1_an_undecodable_header_value_is_the_replacement_character():
    seen = {}
    headers = [("host", "a"), ("cookie", None), ("accept", "x")]
    serve(echo_environ(seen), scope(method="GET", path="/admin/", headers=headers), FakeProto())
    assert seen["HTTP_COOKIE"] == "\ufffd" and seen["HTTP_ACCEPT"] == "x"


def test_an_undecodable_x_forwarded_for_is_400_everywhere():
    """Behind a trusted proxy, `X-Forwarded-For: \\xe9, 203.0.113.9` (the proxy
    appends the caller's address) lost the header and made the caller the proxy:
    past the IP allowlist under /v1/, onto the proxy's login budget in the admin."""
    for path in ("/v1/api/shop/order/async", "/admin/login/"):
        seen = {}
        headers = [("host", "a"), ("x-forwarded-for", None)]
        proto = FakeProto()
        serve(echo_environ(seen), scope(path=path, headers=headers), proto)
        assert proto.answer[0] == 400 and not seen, path
        assert "x-forwarded-for" in json.loads(proto.answer[2])["response"]["error"]["message"]


def test_the_request_threads_are_the_web_threads_setting(settings):
    """One source: the WEB_THREADS setting (the front's threads, and the default of
    `serve --threads`, which hands its value to the web processes' settings)."""
    from workflows.management.commands.serve import Command

    settings.WEB_THREADS = 3
    front = RsgiFront(echo_environ({}))
    loop = asyncio.new_event_loop()
    try:
        front.__rsgi_init__(loop)
        assert len(front.threads) == 3
    finally:
        front.__rsgi_del__(loop)
        loop.close()
    parser = Command().create_parser("manage.py", "serve")
    assert parser.parse_args([]).threads == 3
    assert parser.parse_args(["--threads", "5"]).threads == 5


def test_connect_and_a_target_that_is_not_a_path_are_envelopes_before_the_application():
    """`CONNECT host:port` and `OPTIONS *` reached Django, which answered HTML
    (a CSRF failure page, a 404 page): attacker pass F6."""
    for method, path, status, code in [
        ("CONNECT", "127.0.0.1:5432", 405, "requestError.methodNotAllowed"),
        ("CONNECT", "/v1/api/shop/order/async", 405, "requestError.methodNotAllowed"),
        ("OPTIONS", "*", 400, "requestError.badRequest"),
        ("GET", "example.com:80", 400, "requestError.badRequest"),
    ]:
        seen, proto = {}, FakeProto()
        serve(echo_environ(seen), scope(method=method, path=path), proto)
        assert not seen, (method, path)  # the application never ran
        answer_status, headers, body = proto.answer
        assert answer_status == status, (method, path)
        assert json.loads(body)["response"]["error"]["code"] == code
        assert ("Content-Type", "application/json") in headers
        if status == 405:
            assert dict(headers)["Allow"] == "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"


def test_set_cookie_values_go_out_without_surrounding_whitespace():
    """Django's WSGI handler writes each cookie as `cookie.output(header="")`,
    " csrftoken=…": over HTTP/2 a malformed field (attacker pass F8)."""

    def app(environ, start_response):
        start_response(
            "200 OK",
            [("Content-Type", "text/html"), ("Set-Cookie", " a=1; Path=/"), ("Set-Cookie", " b=2")],
        )
        return [b"ok"]

    proto = FakeProto()
    serve(app, scope(method="GET", path="/admin/login/"), proto)
    assert proto.answer == (
        200,
        [("Content-Type", "text/html"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2")],
        b"ok",
    )
