"""The web server front (iolinker/server.py) against a real `manage.py serve`,
over raw sockets: clients that stall or trickle their body hold no request
thread and get 408 within the deadline while everyone else is served; a chunked
body cut short or malformed is refused; an over-limit `/v1` body's 413 closes the
connection (nothing after it is read as a request); header names with an underscore never
reach the application; `/v1` and `//v1/…` answer the JSON 404; a dead qcluster is
restarted while the web server keeps answering.
"""

import contextlib
import json
import os
import signal
import socket
import threading
import time

import pytest

from tests.conftest import make_api, make_workflow, needs_service
from tests.support.clients import raw_http
from tests.support.environment import redis_url_or_reason
from tests.support.processes import Platform, _children, _cmdline
from tests.support.queue import queue_is_redis
from triggers.models import AuthMode
from workflows.models import Execution, ExecutionStatus

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

THREADS = 4  # request threads of the served process: every slow group outnumbers them
DEADLINE = 3  # IOLINKER_BODY_READ_TIMEOUT of the served process, seconds
PROMPT = 5  # "answered promptly": a generous bound proving "not stuck behind slow clients"
STEPS = [("out", "output", {"value": "{{ body }}"})]


@pytest.fixture
def broker():
    if queue_is_redis():
        url, reason = redis_url_or_reason()
        needs_service(reason or None)
        return url
    return None


def serve(broker=None, *, qcluster: bool = False, **env: str) -> Platform:
    env = {"WEB_THREADS": str(THREADS), "IOLINKER_BODY_READ_TIMEOUT": str(DEADLINE), **env}
    return Platform(redis_url=broker, qcluster=qcluster, env=env).start()


def parse(answer: bytes) -> tuple[int, dict, bytes]:
    head, _, content = answer.partition(b"\r\n\r\n")
    if not head:
        return 0, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:] if ": " in line)}
    return int(lines[0].split()[1]), fields, content


def request(
    port: int, line: str, *headers: str, body: bytes = b"", **kw
) -> tuple[int, dict, bytes]:
    head = "\r\n".join([line, "Host: 127.0.0.1", "Connection: close", *headers]) + "\r\n\r\n"
    return parse(raw_http(port, head.encode("latin-1") + body, **kw))


def error_code(answer: tuple[int, dict, bytes]) -> str:
    status, fields, content = answer
    assert fields["content-type"] == "application/json", (status, content[:200])
    return json.loads(content)["response"]["error"]["code"]


class SlowClient:
    """Sends a request's headers, then its body never (stalled) or a byte a second
    (trickling), and records what the server answers and when."""

    def __init__(self, port: int, line: str, headers: list[str], *, chunked: bool):
        self.chunked = chunked
        framing = "Transfer-Encoding: chunked" if chunked else "Content-Length: 1000"
        head = "\r\n".join([line, "Host: 127.0.0.1", framing, *headers]) + "\r\n\r\n"
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(head.encode())
        self.started = time.monotonic()
        self.answer = b""
        self.closed_after: float | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.answer += chunk
        except OSError:
            pass
        self.closed_after = time.monotonic() - self.started

    def trickle(self) -> None:
        # OSError: the server answered and closed, what the test waits for.
        with contextlib.suppress(OSError):
            self.sock.sendall(b"1\r\nx\r\n" if self.chunked else b"x")


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
def test_slow_clients_hold_no_thread_and_get_408_while_others_are_served(trickle):
    api = make_api(
        make_workflow("slow", STEPS), auth_mode=AuthMode.NONE, sync_enabled=True, sync_timeout=1
    )
    platform = serve()
    port = platform.port
    try:
        status, fields, _ = request(
            port, f"POST {api.path} HTTP/1.1", "Content-Length: 2", body=b"{}"
        )
        assert status == 202
        status_url = fields["location"]
        public = [
            ("POST /admin/login/ HTTP/1.1", ["Cookie: csrftoken=" + "a" * 32]),
            (f"POST {api.path} HTTP/1.1", []),
            (f"POST {api.path.replace('/async', '/sync')} HTTP/1.1", []),
            (f"GET {status_url} HTTP/1.1", []),
            ("GET /v1/openapi.json HTTP/1.1", []),
            ("POST /nowhere HTTP/1.1", []),
        ]
        # N >= threads for every URL, half announcing a length, half chunked.
        slow = [
            SlowClient(port, line, headers, chunked=i % 2 == 1)
            for line, headers in public
            for i in range(THREADS + 2)
        ]
        stop = threading.Event()

        def trickler():
            while not stop.wait(1):
                for client in slow:
                    client.trickle()

        if trickle:
            threading.Thread(target=trickler, daemon=True).start()
        time.sleep(0.5)  # every slow request is in, waiting on its body
        try:
            t0 = time.monotonic()
            status, _, content = request(
                port, f"POST {api.path} HTTP/1.1", "Content-Length: 9", body=b'{"n": 42}'
            )
            trigger_seconds = time.monotonic() - t0
            assert status == 202, content
            t0 = time.monotonic()
            status, _, content = request(port, "GET /admin/login/ HTTP/1.1")
            admin_seconds = time.monotonic() - t0
            assert status == 200 and b"<form" in content
            assert trigger_seconds < PROMPT and admin_seconds < PROMPT
            for client in slow:
                client.reader.join(timeout=DEADLINE + PROMPT)
        finally:
            stop.set()
        for client in slow:
            assert client.closed_after is not None, "a slow client was never answered"
            assert client.closed_after < DEADLINE + PROMPT
            answer = parse(client.answer)
            assert answer[0] == 408, client.answer[:300]
            assert error_code(answer) == "requestError.requestTimeout"
        # Only the two whole triggers made runs.
        assert Execution.objects.count() == 2
    finally:
        platform.stop()


def test_incomplete_and_malformed_chunked_bodies_are_refused_and_store_nothing():
    api = make_api(make_workflow("chunks", STEPS), auth_mode=AuthMode.NONE)
    platform = serve()
    post = f"POST {api.path} HTTP/1.1"
    chunked = "Transfer-Encoding: chunked"
    try:
        # Cut before the last chunk: the client sends part of the body, then stops
        # sending (half-close) and waits for the answer.
        for body in (b'7\r\n{"a": 1\r\n', b'3\r\n{"a\r\n4\r\n": 1}\r\n', b'8\r\n{"a": 1}'):
            answer = request(platform.port, post, chunked, body=body, half_close=True)
            if answer[0]:  # hyper may also close a half-closed connection unanswered
                assert answer[0] == 400 and error_code(answer) == "requestError.badRequest"
        # A malformed chunk size, with or without the rest of a well-formed body.
        for body in (b"zz\r\n{}\r\n0\r\n\r\n", b"-2\r\n{}\r\n0\r\n\r\n", b"2 x\r\n{}\r\n0\r\n\r\n"):
            answer = request(platform.port, post, chunked, body=body)
            assert answer[0] == 400, answer
            assert error_code(answer) == "requestError.badRequest"
        assert not Execution.objects.exists()
        # Whole chunked bodies are accepted as before, in one chunk or many.
        for body in (b'8\r\n{"a": 1}\r\n0\r\n\r\n', b'3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'):
            answer = request(platform.port, post, chunked, body=body)
            assert answer[0] == 202, answer
        assert [e.input["body"] for e in Execution.objects.order_by("uid")] == [{"a": 1}] * 2
    finally:
        platform.stop()


def exchange(port: int, data: bytes, *, timeout: float = 10) -> tuple[bytes, bool]:
    """Send ``data`` on a keep-alive connection; what comes back, and whether the
    server closed the connection (False: it was still open at ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout) as sock:
        with contextlib.suppress(OSError):  # the server may close while we send
            sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            return answer, False
        except ConnectionResetError:
            pass
    return answer, True


def test_an_over_limit_v1_body_answered_413_closes_the_connection(settings):
    """The rest of an over-limit body is never read: were the connection kept,
    those bytes (here a whole second request) would be parsed as the next
    request. The 413 says `Connection: close` and the server closes."""
    api = make_api(make_workflow("big", STEPS), auth_mode=AuthMode.NONE)
    platform = serve()
    limit = settings.IOLINKER_MAX_BODY_BYTES
    head = f"POST {api.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    second = f"POST {api.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{{}}"
    announced = head + f"Content-Length: {2 * limit}\r\n\r\n" + second
    padding = b'{"a": "' + b"x" * limit + b'"}'
    chunked = (
        (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
        + f"{len(padding):x}\r\n".encode()
        + padding
        + b"\r\n0\r\n\r\n"
        + second.encode()
    )
    try:
        for data in (announced.encode(), chunked):
            answer, closed = exchange(platform.port, data)
            status, fields, content = parse(answer)
            assert status == 413, answer[:300]
            assert error_code((status, fields, content)) == "requestError.payloadTooLarge"
            assert fields.get("connection") == "close"
            assert answer.count(b"HTTP/1.1 ") == 1, answer[:600]  # no second answer
            assert closed
        assert not Execution.objects.exists()
    finally:
        platform.stop()


def test_header_names_with_underscores_never_choose_the_callers_address():
    """Behind a trusted proxy the caller is the right-most X-Forwarded-For entry;
    an `X_Forwarded_For` header (which a proxy may pass on) must not replace it."""
    api = make_api(make_workflow("xff", STEPS), auth_mode=AuthMode.NONE, ip_allowlist="203.0.113.7")
    platform = serve(IOLINKER_TRUSTED_PROXIES="127.0.0.0/8")
    post = f"POST {api.path} HTTP/1.1"
    try:
        for headers in (
            ["X-Forwarded-For: 198.51.100.1", "X_Forwarded_For: 203.0.113.7"],
            ["X_Forwarded_For: 203.0.113.7", "X-Forwarded-For: 198.51.100.1"],
            ["X_Forwarded_For: 203.0.113.7"],
            ["X-Forwarded-For: 198.51.100.1", "X-Forwarded_For: 203.0.113.7"],
        ):
            answer = request(platform.port, post, *headers, "Content-Length: 2", body=b"{}")
            assert answer[0] == 403, (headers, answer)
            assert error_code(answer) == "requestError.ipNotAllowed"
        assert not Execution.objects.exists()
        # The real header still works.
        answer = request(
            platform.port, post, "X-Forwarded-For: 203.0.113.7", "Content-Length: 2", body=b"{}"
        )
        assert answer[0] == 202, answer
    finally:
        platform.stop()


def test_v1_and_double_slash_urls_answer_the_json_404_over_the_wire():
    platform = serve()
    try:
        for path in ("/v1", "//v1/x", "//v1/api/shop/order/async", "///v1/openapi.json"):
            for verb in ("GET", "POST"):
                answer = request(platform.port, f"{verb} {path} HTTP/1.1", "Content-Length: 0")
                assert answer[0] == 404, (path, answer)
                assert error_code(answer) == "requestError.notFound"
    finally:
        platform.stop()


def test_a_non_ascii_idempotency_key_is_400_over_the_wire_and_starts_nothing():
    """granian passes no value for header bytes it cannot decode: the key used to
    vanish and the call was accepted as one without a key (schemathesis, seed 19)."""
    api = make_api(make_workflow("keys", STEPS), auth_mode=AuthMode.NONE)
    platform = serve()
    try:
        head = (
            (
                f"POST {api.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                "Content-Length: 2\r\nIdempotency-Key: "
            ).encode()
            + "×ø".encode()
            + b"\r\n\r\n{}"
        )
        answer = parse(raw_http(platform.port, head))
        assert answer[0] == 400, answer
        assert error_code(answer) == "requestError.badRequest"
        assert b"idempotency-key" in answer[2]
        assert not Execution.objects.exists()
    finally:
        platform.stop()


def test_serve_restarts_a_dead_qcluster_and_the_web_server_goes_on(broker):
    api = make_api(make_workflow("restart", STEPS), auth_mode=AuthMode.NONE)
    platform = serve(broker, qcluster=True)
    post = f"POST {api.path} HTTP/1.1"
    try:
        (first,) = [p for p in _children(platform.proc.pid) if b"qcluster" in _cmdline(p)]
        everything = [p for pids in platform.pids().values() for p in pids]
        os.killpg(first, signal.SIGKILL)  # the cluster and all its workers at once
        deadline = time.monotonic() + 30
        uids, new = [], []
        while time.monotonic() < deadline and not new:
            answer = request(platform.port, post, "Content-Length: 8", body=b'{"n": 1}')
            assert answer[0] == 202, answer  # the web server answers throughout
            uids.append(json.loads(answer[2])["response"]["uid"])
            new = [
                p for p in _children(platform.proc.pid) if b"qcluster" in _cmdline(p) and p != first
            ]
            time.sleep(0.2)
        assert new, "no new qcluster within 30 s"
        assert platform.proc.poll() is None
        # The new cluster runs the triggers made while it was down, and new ones.
        answer = request(platform.port, post, "Content-Length: 8", body=b'{"n": 2}')
        uids.append(json.loads(answer[2])["response"]["uid"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = Execution.objects.filter(uid__in=uids, status=ExecutionStatus.SUCCEEDED)
            if done.count() == len(uids):
                break
            time.sleep(0.3)
        assert done.count() == len(uids)
    finally:
        platform.stop()
    # Ctrl-C (SIGTERM here) still stops everything: no process of the platform is left.
    assert platform.proc.returncode is not None
    time.sleep(1)  # orphans are reaped by init
    everything += [p for p in new if p not in everything]
    assert not [p for p in everything if _cmdline(p)]
