"""Completion callbacks: a finished run is POSTed, signed, to its API's callback URL;
failures are retried with backoff and every attempt is recorded on the run.

Receivers are real local HTTP servers; signatures are checked with the Standard
Webhooks reference library (`standardwebhooks`), not with our own signing code.
"""

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import ECHO_STEPS, execution_start, make_api, make_workflow, needs_service
from tests.support.environment import redis_url_or_reason
from tests.support.processes import Platform, free_port
from tests.support.queue import drain_queue
from tests.support.servers import LocalHttpServer
from triggers import callbacks
from triggers.models import AuthMode, CallbackAttempt, CallbackDelivery, CallbackStatus
from workflows import hooks
from workflows.lifecycle import execution_recover_stale
from workflows.models import Execution, ExecutionStatus
from workflows.selectors import execution_status
from workflows.services import execution_run_batch, queueing

pytestmark = pytest.mark.django_db


class Receiver(LocalHttpServer):
    """A callback receiver: answers the given status codes in turn (the last one
    from then on), optionally after a delay, and records what it got."""

    def __init__(self, codes=(200,), delay: float = 0.0):
        self.requests: list[dict] = []
        self.got = threading.Event()
        outer, codes = self, list(codes)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append({"headers": dict(self.headers), "body": body})
                time.sleep(delay)
                code = codes.pop(0) if len(codes) > 1 else codes[0]
                self.send_response(code)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"nope :(" if code >= 300 else b"thanks!")
                outer.got.set()

            def log_message(self, *args):
                pass

        self.serve(Handler, "/hooks/iolinker")


def callback_api(url: str, *, method: str = "order", steps=ECHO_STEPS):
    """An API with a callback URL and a fresh secret (on `.secret`)."""
    api = make_api(make_workflow(f"wf-{method}", steps), method=method, auth_mode=AuthMode.NONE)
    api.callback_url = url
    api.save()
    api.secret = callbacks.api_rotate_callback_secret(api=api)
    return api


def start(api, body=None) -> int:
    return execution_start(workflow=api.workflow, trigger_input={"body": body or {}}, api=api).uid


@pytest.fixture
def settle(django_capture_on_commit_callbacks):
    """Run every queued task (runs, then the callbacks their commits queue) in this
    process, the way workers would, until the queue is empty."""

    def settle() -> int:
        ran = 0
        while True:
            with django_capture_on_commit_callbacks(execute=True):
                count = drain_queue()
            if not count:
                return ran
            ran += count

    return settle


def verify(secret: str, request: dict) -> dict:
    return Webhook(secret).verify(request["body"], request["headers"])


def test_a_finished_run_is_posted_signed_to_the_callback_url_and_verifies(settle):
    with Receiver() as receiver:
        api = callback_api(receiver.url)
        uid = start(api, {"name": "x"})
        settle()
    [request] = receiver.requests
    payload = verify(api.secret, request)  # the reference verifier accepts it
    execution = Execution.objects.get(uid=uid)
    assert payload == {
        "type": "execution.finished",
        "api": {"module": "shop", "method": "order"},
        **json.loads(json.dumps(execution_status(execution))),
    }
    assert payload["status"] == "succeeded" and payload["uid"] == str(uid)
    assert payload["data"]["body"] == {"name": "x"}
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["webhook-id"] == f"exec_{uid}"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["webhook-signature"].startswith("v1,")
    assert headers["content-type"] == "application/json"
    # Tampered bodies, other secrets and replayed old timestamps are refused.
    with pytest.raises(WebhookVerificationError):
        verify(api.secret, {**request, "body": request["body"].replace(b"x", b"y")})
    with pytest.raises(WebhookVerificationError):
        verify(callbacks.callback_secret_new(), request)
    with pytest.raises(WebhookVerificationError):
        stale = {**request["headers"], "webhook-timestamp": str(int(time.time()) - 3600)}
        verify(api.secret, {**request, "headers": stale})
    delivery = CallbackDelivery.objects.get(pk=uid)
    assert delivery.status == CallbackStatus.DELIVERED and delivery.attempts == 1
    assert delivery.next_attempt_at is None and delivery.finished_at
    [attempt] = delivery.attempt_log.all()
    assert (attempt.number, attempt.status_code, attempt.error) == (1, 200, "")
    assert attempt.url == receiver.url and attempt.next_attempt_at is None


def test_a_failing_receiver_gets_a_retry_and_both_attempts_are_recorded(settings, settle):
    settings.IOLINKER_CALLBACK_RETRY_BASE = 0.2
    with Receiver(codes=[500, 200]) as receiver:
        api = callback_api(receiver.url)
        uid = start(api)
        settle()
        delivery = CallbackDelivery.objects.get(pk=uid)
        assert delivery.status == CallbackStatus.PENDING and delivery.attempts == 1
        [first] = delivery.attempt_log.all()
        assert first.status_code == 500 and first.error == "Answered 500: nope :("
        assert first.next_attempt_at == delivery.next_attempt_at > first.started_at
        # Not due yet: neither the sweeper nor a stray message sends it early.
        assert callbacks.callbacks_deliver_due()["queued"] == 0
        assert callbacks.callback_deliver(uid=uid) == "skipped"
        time.sleep(0.3)
        assert callbacks.callbacks_deliver_due() == {"queued": 1, "gave_up": 0}
        settle()
        assert callbacks.callbacks_deliver_due()["queued"] == 0
    delivery.refresh_from_db()
    assert delivery.status == CallbackStatus.DELIVERED and delivery.attempts == 2
    attempts = list(delivery.attempt_log.values_list("number", "status_code", "error"))
    assert attempts == [(1, 500, "Answered 500: nope :("), (2, 200, "")]
    # The same message both times (same id and body), each signed at its own time.
    assert len(receiver.requests) == 2
    assert [verify(api.secret, r)["uid"] for r in receiver.requests] == [str(uid)] * 2
    assert receiver.requests[0]["body"] == receiver.requests[1]["body"]
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1


def test_retries_back_off_exponentially_up_to_a_cap(settings):
    settings.IOLINKER_CALLBACK_RETRY_BASE = 30
    delays = [callbacks.callback_retry_delay(n) for n in range(1, 9)]
    assert delays[:6] == [30, 120, 480, 1920, 7680, 30720]
    assert delays[6:] == [callbacks.MAX_DELAY_S] * 2


def test_a_dead_target_records_failures_without_holding_up_other_runs(
    settings, settle, outbound_loopback
):
    settings.IOLINKER_CALLBACK_RETRY_BASE = 0.2
    settings.IOLINKER_CALLBACK_MAX_ATTEMPTS = 2
    dead = callback_api(f"http://127.0.0.1:{free_port()}/gone", method="dead")
    with Receiver() as receiver:
        live = callback_api(receiver.url, method="live")
        dead_uid, live_uid = start(dead), start(live)
        settle()
        assert [verify(live.secret, r)["uid"] for r in receiver.requests] == [str(live_uid)]
    assert Execution.objects.get(uid=dead_uid).status == ExecutionStatus.SUCCEEDED
    delivery = CallbackDelivery.objects.get(pk=dead_uid)
    assert delivery.status == CallbackStatus.PENDING
    time.sleep(0.3)
    assert callbacks.callbacks_deliver_due()["queued"] == 1
    settle()
    delivery.refresh_from_db()
    assert delivery.status == CallbackStatus.FAILED and delivery.next_attempt_at is None
    attempts = list(delivery.attempt_log.all())
    assert [a.number for a in attempts] == [1, 2]
    assert all(a.status_code is None and "ConnectError" in a.error for a in attempts)
    assert attempts[0].next_attempt_at and attempts[1].next_attempt_at is None
    assert callbacks.callbacks_deliver_due()["queued"] == 0  # given up: never again


def test_a_run_worker_never_waits_for_a_callback_target(
    settings, django_capture_on_commit_callbacks
):
    settings.IOLINKER_CALLBACK_TIMEOUT = 1
    with Receiver(delay=3) as receiver:
        api = callback_api(receiver.url)
        uids = [start(api) for _ in range(3)]
        with django_capture_on_commit_callbacks(execute=True) as queued:
            t0 = time.monotonic()
            assert sorted(execution_run_batch(uids=uids)) == sorted(uids)
            assert time.monotonic() - t0 < 1
        assert receiver.requests == []  # the runs are recorded; no callback sent yet
        assert len(queued) == 1  # their deliveries are queued after the commit
        t0 = time.monotonic()
        assert callbacks.callback_deliver(uid=uids[0]) == "retry"
        assert time.monotonic() - t0 < 2.5  # a slow receiver is cut off at the timeout
    [attempt] = CallbackAttempt.objects.filter(delivery_id=uids[0])
    assert attempt.error == "Timed out after 1 s" and 900 <= attempt.duration_ms < 2500


def test_a_redirect_is_not_followed(settle):
    with Receiver(codes=[302]) as receiver:
        api = callback_api(receiver.url)
        uid = start(api)
        settle()
    [attempt] = CallbackAttempt.objects.filter(delivery_id=uid)
    assert attempt.status_code == 302 and "not followed" in attempt.error
    assert len(receiver.requests) == 1


def test_runs_of_apis_without_a_callback_cost_no_extra_query(
    monkeypatch, django_capture_on_commit_callbacks
):
    plain = make_api(make_workflow("plain", ECHO_STEPS), method="plain", auth_mode="none")
    callback_api("http://127.0.0.1:9/other", method="other")  # another API has one

    def run_chunk() -> int:
        uids = [start(plain) for _ in range(3)]
        monkeypatch.setattr(queueing.ProcessState, "chunk_size", 32)  # one chunk
        with (
            CaptureQueriesContext(connection) as queries,
            django_capture_on_commit_callbacks() as after_commit,
        ):
            assert len(execution_run_batch(uids=uids)) == 3
        assert after_commit == []  # nothing to queue for them
        return len(queries)

    run_chunk()  # warms the per-process caches (workflow steps, APIs with callbacks)
    with_hook = run_chunk()
    monkeypatch.setitem(hooks.FINISH_HOOKS, "triggers.callbacks", lambda executions: None)
    without_hook = run_chunk()
    assert with_hook == without_hook
    assert not CallbackDelivery.objects.exists()


def test_a_run_failed_by_the_stale_run_sweeper_gets_its_callback(
    settings, settle, django_capture_on_commit_callbacks
):
    with Receiver() as receiver:
        api = callback_api(receiver.url)
        uid = start(api)
        long_ago = timezone.now() - timedelta(seconds=settings.IOLINKER_RUN_TIMEOUT + 121)
        Execution.objects.filter(uid=uid).update(
            status=ExecutionStatus.RUNNING,
            started_at=long_ago,
            recoveries=settings.IOLINKER_RUN_MAX_RECOVERIES,  # no recovery left
        )
        with django_capture_on_commit_callbacks(execute=True):
            assert execution_recover_stale()["failed"] == 1
        settle()
    [request] = receiver.requests
    payload = verify(api.secret, request)
    assert payload["status"] == "failed" and payload["code"] == 1
    assert "stopped without finishing" in payload["msg"]


def test_a_lost_first_message_is_queued_again_by_the_sweeper(settings, settle):
    with Receiver() as receiver:
        api = callback_api(receiver.url)
        uid = start(api)
        assert drain_queue() == 1  # the run; its callback's message is never sent
        assert callbacks.callbacks_deliver_due()["queued"] == 0  # may still be on its way
        CallbackDelivery.objects.filter(pk=uid).update(
            queued_at=timezone.now() - timedelta(seconds=settings.IOLINKER_REQUEUE_AFTER + 1)
        )
        assert callbacks.callbacks_deliver_due()["queued"] == 1
        settle()
    assert len(receiver.requests) == 1
    assert CallbackDelivery.objects.get(pk=uid).status == CallbackStatus.DELIVERED


def test_the_callback_sweeper_is_scheduled_every_minute():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="triggers.tasks.deliver_due_callbacks")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1
    assert schedule.repeats < 0


def test_show_execution_prints_the_callback_attempts(settle, capsys):
    with Receiver() as receiver:
        uid = start(callback_api(receiver.url))
        settle()
    call_command("show_execution", str(uid))
    callback = json.loads(capsys.readouterr().out)["callback"]
    assert callback["status"] == "delivered" and callback["webhookId"] == f"exec_{uid}"
    [attempt] = callback["attempts"]
    assert attempt["number"] == 1 and attempt["statusCode"] == 200 and attempt["error"] == ""


def test_admin_shows_the_callback_secret_once_and_rotates_it(admin_client, echo_workflow):
    form = {
        "module": "crm",
        "method": "hook",
        "http_method": "POST",
        "workflow": echo_workflow.pk,
        "enabled": "on",
        "auth_mode": "none",
        "auth_user": "",
        "password": "",
        "callback_url": "ftp://example.com/hook",
        "debug_payload": "{}",
        "description": "",
        "sync_timeout": "25",
    }
    refused = admin_client.post("/admin/triggers/apidefinition/add/", form)
    assert "callback_url" in refused.context["adminform"].form.errors
    form["callback_url"] = "https://example.com/hook"
    response = admin_client.post("/admin/triggers/apidefinition/add/", form, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    shown = next(m for m in messages if "Callback signing secret for crm/hook" in m)
    secret = shown.split("<code>")[1].split("<")[0]
    from triggers.models import ApiDefinition

    api = ApiDefinition.objects.get(module="crm", method="hook")
    assert secret.startswith("whsec_") and api.callback_secret == secret
    page = admin_client.get(f"/admin/triggers/apidefinition/{api.pk}/change/").content.decode()
    assert secret not in page and "Callback signing secret" in page
    rotated = admin_client.post(
        "/admin/triggers/apidefinition/",
        {"action": "rotate_callback_secrets", "_selected_action": [api.pk]},
        follow=True,
    )
    [message] = [str(m) for m in rotated.context["messages"]]
    api.refresh_from_db()
    assert api.callback_secret != secret and api.callback_secret in message


def test_admin_execution_page_lists_callback_attempts(admin_client, settings, settle):
    settings.IOLINKER_CALLBACK_RETRY_BASE = 0.2
    with Receiver(codes=[503, 200]) as receiver:
        uid = start(callback_api(receiver.url))
        settle()
        time.sleep(0.3)
        callbacks.callbacks_deliver_due()
        settle()
    page = admin_client.get(f"/admin/workflows/execution/{uid}/change/").content.decode()
    assert "Answered 503: nope :(" in page and "delivered" in page
    listing = admin_client.get("/admin/triggers/callbackdelivery/").content.decode()
    assert str(uid) in listing


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("broker", ["orm", "redis"])
def test_callbacks_are_delivered_by_a_real_cluster(broker):
    redis_url = None
    if broker == "redis":
        redis_url, reason = redis_url_or_reason()
        needs_service(reason or None)
    with Receiver() as receiver:
        api = callback_api(receiver.url)
        platform = Platform(redis_url=redis_url).start()
        try:
            response = httpx.post(
                f"{platform.base_url}/v1/api/shop/order/async", json={"n": 1}, timeout=10
            )
            assert response.status_code == 202, response.text
            assert receiver.got.wait(30), "no callback within 30 s"
        finally:
            platform.stop()
    uid = response.json()["response"]["uid"]
    [request] = receiver.requests
    payload = verify(api.secret, request)
    assert payload["uid"] == uid and payload["status"] == "succeeded"
    assert payload["data"]["body"] == {"n": 1}
    delivery = CallbackDelivery.objects.get(pk=int(uid))
    assert delivery.status == CallbackStatus.DELIVERED and delivery.attempts == 1


def test_a_run_cancelled_while_queued_gets_its_callback(settle, django_capture_on_commit_callbacks):
    from workflows.lifecycle import execution_cancel

    with Receiver() as receiver:
        api = callback_api(receiver.url)
        uid = start(api)
        with django_capture_on_commit_callbacks(execute=True):
            execution_cancel(uid=uid)
        settle()
    [request] = receiver.requests
    payload = verify(api.secret, request)
    assert payload["status"] == "cancelled" and payload["code"] == 2
