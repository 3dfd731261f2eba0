"""The outbound address filter (workflows/outbound.py): http and llm steps and
completion callbacks never reach loopback, private, link-local or other
non-public addresses unless IOLINKER_OUTBOUND_ALLOW lists them, whatever the
URL's spelling, after redirects, and on the address actually connected to."""

import json
import socket
from http.server import BaseHTTPRequestHandler

import pytest

from tests.conftest import execution_start, make_workflow
from tests.support.queue import drain_queue
from tests.support.servers import LocalHttpServer, RecordingServer
from tests.test_callbacks import Receiver, callback_api, settle, start  # noqa: F401
from tests.test_llm_step import FakeLlm, credential, run_llm
from triggers.models import CallbackAttempt
from workflows import outbound
from workflows.models import Execution, ExecutionStatus, Workflow
from workflows.outbound import address_refusal

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def default_filter(settings):
    """The default setting: nothing allowed beyond public addresses."""
    settings.IOLINKER_OUTBOUND_ALLOW = ()


class Unlisted(RecordingServer):
    """A local server the filter does not allow: it must never get a request."""

    allow_outbound = False


class Redirector(LocalHttpServer):
    """An allowed server answering 302 to ``target``."""

    def __init__(self, target: str):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.serve(Handler)


def http_run(url: str) -> Execution:
    workflow = make_workflow(f"wf-{Workflow.objects.count()}", [("call", "http", {"url": url})])
    execution = execution_start(workflow=workflow, trigger_input={"body": {}})
    drain_queue()
    execution.refresh_from_db()
    return execution


def assert_refused(execution: Execution, what: str = "loopback"):
    assert execution.status == ExecutionStatus.FAILED
    assert "refused" in execution.error and f"is a {what} address" in execution.error
    assert "IOLINKER_OUTBOUND_ALLOW" in execution.error


@pytest.mark.parametrize(
    "ip, kind",
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.1.2.3", "private"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1%eth0", "link-local"),
        ("fd12:3456::1", "private"),  # unique-local
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "non-public"),  # shared address space (CGNAT)
    ],
)
def test_non_public_addresses_are_refused_by_default(ip, kind):
    assert f"is a {kind} address" in address_refusal(ip)


def test_public_addresses_pass_and_the_setting_allows_networks(settings):
    assert address_refusal("93.184.216.34") is None
    assert address_refusal("2606:4700:4700::1111") is None
    import ipaddress

    settings.IOLINKER_OUTBOUND_ALLOW = (ipaddress.ip_network("10.0.0.0/8"),)
    assert address_refusal("10.9.8.7") is None
    assert address_refusal("::ffff:10.9.8.7") is None  # the same address, mapped
    assert address_refusal("11.0.0.1") is None
    assert address_refusal("127.0.0.1") is not None


def test_http_steps_never_reach_loopback_whatever_the_spelling(monkeypatch):
    # Resolve "localhost." as systemd-resolved and many others do (this machine's
    # /etc/hosts alone does not know the trailing dot: that would fail safe anyway).
    real = socket.getaddrinfo
    monkeypatch.setattr(
        outbound.socket,
        "getaddrinfo",
        lambda host, *a, **k: real("localhost" if host == "localhost." else host, *a, **k),
    )
    with Unlisted() as server:
        port = server.server.server_address[1]
        for url in (
            server.url,
            f"http://0x7f000001:{port}/",
            f"http://2130706433:{port}/",
            f"http://localhost.:{port}/",
            f"http://localhost:{port}/",
            f"http://[::ffff:127.0.0.1]:{port}/",
            f"http://[::ffff:7f00:1]:{port}/",
        ):
            assert_refused(http_run(url))
        assert server.requests == []


def test_http_steps_never_reach_ipv6_loopback():
    try:
        listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with listener:
        listener.listen(8)
        listener.setblocking(False)
        assert_refused(http_run(f"http://[::1]:{listener.getsockname()[1]}/"))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


def test_a_redirect_from_an_allowed_server_to_loopback_is_refused():
    class Target(Unlisted):
        host = "127.0.0.2"

    with Target() as target, Redirector(target.url + "/secret") as allowed:
        execution = http_run(allowed.url + "/start")
        assert_refused(execution)
        assert allowed.requests == ["/start"]  # the allowed server was asked ...
        assert target.requests == []  # ... its redirect target never


def test_an_allowed_server_is_reached_and_its_redirects_to_itself_followed():
    with RecordingServer() as server, Redirector(server.url + "/landed") as hop:
        execution = http_run(hop.url + "/go")
    assert execution.status == ExecutionStatus.SUCCEEDED
    assert [r["path"] for r in server.requests] == ["/landed"]


def test_the_connection_goes_to_the_checked_address_never_a_second_lookup(monkeypatch):
    """DNS rebinding: the name resolves once per connection; the socket connects
    to the address that was checked (here the refused one is skipped)."""

    class Other(Unlisted):
        host = "127.0.0.2"

    with Other() as refused, RecordingServer() as allowed:
        port = allowed.server.server_address[1]
        lookups, connects = [], []
        real_connect = socket.create_connection

        real_getaddrinfo = socket.getaddrinfo

        def fake_getaddrinfo(host, port_, *args, **kwargs):
            lookups.append(host)
            if host != "rebind.example":
                return real_getaddrinfo(host, port_, *args, **kwargs)
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port_)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port_)),
            ]

        def spy_connect(address, *args, **kwargs):
            if address[1] == port:  # ours, not the database's or Redis's
                connects.append(address[0])
            return real_connect(address, *args, **kwargs)

        monkeypatch.setattr(outbound.socket, "getaddrinfo", fake_getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", spy_connect)
        execution = http_run(f"http://rebind.example:{port}/x")
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    # One lookup of the name; any other is of a numeric address (create_connection
    # "resolves" the checked one; the database driver may look up its own host).
    assert [host for host in lookups if host == "rebind.example"] == ["rebind.example"]
    assert all(host[0].isdigit() for host in lookups if host != "rebind.example")
    assert connects == ["127.0.0.1"]
    assert refused.requests == [] and len(allowed.requests) == 1


def test_an_llm_endpoint_on_loopback_is_refused():
    class UnlistedLlm(FakeLlm):
        allow_outbound = False

    with UnlistedLlm() as llm:
        credential(llm.base_url)
        execution = run_llm({"credential": "openai", "prompt": "hi"})
        assert_refused(execution)
        assert llm.requests == []


def test_a_callback_to_loopback_is_refused_and_recorded(settle):  # noqa: F811
    class UnlistedReceiver(Receiver):
        allow_outbound = False

    with UnlistedReceiver() as receiver:
        api = callback_api(receiver.url)
        start(api)
        settle()
        assert receiver.requests == []
    attempt = CallbackAttempt.objects.get()
    assert attempt.status_code is None
    assert attempt.error.startswith("Refused: 127.0.0.1 is a loopback address")


def test_outbound_urls_with_secrets_are_not_logged(caplog):
    caplog.set_level("DEBUG")
    with RecordingServer() as server:
        execution = http_run(server.url + "/q?api_key=SECRET-in-query")
        execution_userinfo = http_run(server.url.replace("//", "//user:SECRET-pw@") + "/u")
    assert execution.status == execution_userinfo.status == ExecutionStatus.SUCCEEDED
    assert len(server.requests) == 2
    assert "SECRET" not in caplog.text
    assert all("SECRET" not in json.dumps(r.getMessage()) for r in caplog.records)


@pytest.mark.parametrize("ip", ["::7f00:1", "::a00:1", "fec0::1", "64:ff9b:1::a00:1"])
def test_addresses_python_calls_global_but_are_not_public_are_refused(ip):
    # IPv4-compatible ::a.b.c.d, site-local fec0::/10 and the local-use NAT64 prefix:
    # Python 3.11's is_global says True for each (found by review).
    assert address_refusal(ip) is not None
