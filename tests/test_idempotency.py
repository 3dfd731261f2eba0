"""Idempotency-Key on triggers: a retry gets the first call's run, never a second one."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.utils import timezone

from tests.conftest import make_api
from tests.support.queue import queued_messages
from tests.test_trigger_errors import assert_error
from tests.test_trigger_sync import sync_api, worker
from triggers.models import IdempotencyKey
from triggers.services import idempotency_key_purge
from workflows.models import Execution
from workflows.services import queueing

JSON = "application/json"
ORDER = "/v1/api/shop/order/async"


def post(caller, body='{"item": "book"}', *, path=ORDER, key="order-42", **headers):
    if key is not None:
        headers["Idempotency-Key"] = key
    return caller.post(path, data=body, content_type=JSON, headers=headers)


def uid_of(response) -> str:
    assert response.status_code in (200, 202), response.content
    return response.json()["response"]["uid"]


def expire(key: str = "order-42") -> None:
    """Make a key older than its window (no clock to mock: the row is dated back)."""
    from django.conf import settings

    long_ago = timezone.now() - timedelta(seconds=settings.IOLINKER_IDEMPOTENCY_SECONDS + 1)
    IdempotencyKey.objects.filter(key=key).update(created_at=long_ago)


@pytest.mark.django_db
def test_a_retry_with_the_same_key_gets_the_first_answer_and_starts_nothing(caller, token_api):
    secure = "/v1/api/shop/secure/async"
    first = post(caller, path=secure, token=token_api.plain_token)
    retry = post(caller, path=secure, token=token_api.plain_token)
    assert first.status_code == retry.status_code == 202
    assert retry.content == first.content and retry["Location"] == first["Location"]
    assert retry["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Execution.objects.count() == 1 and queued_messages() == 1
    row = IdempotencyKey.objects.get()
    assert (row.api, row.key, str(row.uid)) == (token_api, "order-42", uid_of(first))


@pytest.mark.django_db
def test_an_open_apis_replay_never_discloses_the_runs_read_key(caller, open_api):
    first = post(caller)
    assert "?key=" in first["Location"]
    assert caller.get(first["Location"]).status_code == 200  # the first caller reads it
    retry = post(caller)  # anyone who knows (or guesses) "order-42"
    assert retry.status_code == 202 and retry["Idempotent-Replayed"] == "true"
    assert uid_of(retry) == uid_of(first) and Execution.objects.count() == 1
    assert "key=" not in retry["Location"]
    assert retry["Location"] == first["Location"].split("?")[0]
    assert caller.get(retry["Location"]).status_code == 404


@pytest.mark.django_db
def test_the_same_request_serialised_or_sent_differently_is_a_retry(caller, token_api):
    url = "/v1/api/shop/secure/async?a=1"
    first = post(caller, '{"x": 1, "y": [1, 2]}', path=url, token=token_api.plain_token)
    retry = post(
        caller,
        '{ "y": [1, 2],\n "x": 1 }',  # same JSON, other key order and spacing
        path=url,
        token=token_api.plain_token,
        user_agent="retrying-client/2",  # headers are not part of the request's identity
        x_request_id="r-2",
    )
    assert uid_of(retry) == uid_of(first) and retry["Idempotent-Replayed"] == "true"
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_calls_without_a_key_are_never_deduplicated_on_their_body(caller, open_api):
    uids = {uid_of(post(caller, key=None)) for _ in range(2)}
    assert len(uids) == 2 and Execution.objects.count() == 2
    assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "path"),
    [('{"item": "pen"}', ORDER), ('{"item": "book"}', ORDER + "?gift=1")],
    ids=["other body", "other query"],
)
def test_the_same_key_with_another_request_is_422_and_stores_nothing(caller, open_api, body, path):
    first = post(caller)
    fingerprint = IdempotencyKey.objects.get().fingerprint
    response = post(caller, body, path=path)
    assert_error(response, 422, "requestError.idempotencyKeyReused")
    assert "Idempotent-Replayed" not in response and "Location" not in response
    assert list(Execution.objects.values_list("uid", flat=True)) == [int(uid_of(first))]
    row = IdempotencyKey.objects.get()
    assert (str(row.uid), row.fingerprint) == (uid_of(first), fingerprint)
    assert queued_messages() == 1


@pytest.mark.django_db
def test_keys_belong_to_one_api(caller, open_api, echo_workflow):
    make_api(echo_workflow, method="refund", auth_mode="none")
    order = post(caller)
    refund = post(caller, path="/v1/api/shop/refund/async")
    assert uid_of(order) != uid_of(refund)
    assert "Idempotent-Replayed" not in refund
    assert Execution.objects.count() == 2 and IdempotencyKey.objects.count() == 2


@pytest.mark.django_db
def test_an_expired_key_starts_a_new_run_even_for_another_request(caller, open_api, settings):
    settings.IOLINKER_IDEMPOTENCY_SECONDS = 60
    first = post(caller)
    expire()
    again = post(caller, '{"item": "pen"}')
    assert uid_of(again) != uid_of(first) and "Idempotent-Replayed" not in again
    assert Execution.objects.count() == 2
    row = IdempotencyKey.objects.get()  # the key was taken over, with a new window
    assert str(row.uid) == uid_of(again) and row.created_at > timezone.now() - timedelta(seconds=60)
    assert uid_of(post(caller, '{"item": "pen"}')) == uid_of(again)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key",
    ["k" * 256, "", "tab\there", "caf\u00e9", "new\nline"],
    ids=["256 chars", "empty", "control", "non-ascii", "newline"],
)
def test_a_malformed_key_is_400_and_starts_nothing(caller, open_api, key):
    response = post(caller, key=key)
    assert_error(response, 400, "requestError.invalidParams", "Idempotency-Key")
    assert not Execution.objects.exists() and not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_a_key_of_255_printable_characters_is_accepted(caller, open_api):
    key = ("a-Z_0 9~!" * 29)[:255]
    assert uid_of(post(caller, key=key)) == uid_of(post(caller, key=key))
    assert IdempotencyKey.objects.get().key == key


@pytest.mark.django_db
def test_credentials_are_checked_before_the_key(caller, token_api):
    path = "/v1/api/shop/secure/async"
    post(caller, path=path, token=token_api.plain_token)
    # A wrong token learns nothing about the key: neither a replay nor a 422...
    assert_error(post(caller, path=path, token="wrong"), 401, "requestError.unauthorized")
    assert_error(post(caller, "{}", path=path, token="wrong"), 401, "requestError.unauthorized")
    # ...nor even whether its key is well-formed.
    assert_error(post(caller, path=path, key="", token="wrong"), 401, "requestError.unauthorized")
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_a_failed_write_stores_no_key(caller, open_api, monkeypatch):
    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(queueing, "queue_push", down)
    assert_error(post(caller), 503, "serverError.unavailable")
    assert not Execution.objects.exists() and not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_a_failed_queue_push_removes_the_run_and_its_key(caller, open_api, monkeypatch):
    # The Redis broker path: key and run commit first, then the push fails. A retry
    # must start a run, not replay a uid that no longer exists.
    def push_fails(**kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(queueing, "queue_is_transactional", lambda: False)
    with monkeypatch.context() as patch:
        patch.setattr(queueing, "queue_push", push_fails)
        assert_error(post(caller), 503, "serverError.unavailable", "queue")
    assert not Execution.objects.exists() and not IdempotencyKey.objects.exists()
    retry = post(caller)
    assert "Idempotent-Replayed" not in retry
    assert Execution.objects.get().uid == int(uid_of(retry))


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_with_one_key_start_exactly_one_run(caller, open_api):
    start = threading.Barrier(8)

    def call(_):
        client = type(caller)()  # one client per thread
        start.wait()
        try:
            return post(client)
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(8)))
    uids = {uid_of(r) for r in responses}
    assert [r.status_code for r in responses] == [202] * 8 and len(uids) == 1
    assert list(Execution.objects.values_list("uid", flat=True)) == [int(uids.pop())]
    assert sum(r.get("Idempotent-Replayed") == "true" for r in responses) == 7
    assert IdempotencyKey.objects.count() == 1 and queued_messages() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_with_one_key_and_different_requests_start_one_run(caller, open_api):
    start = threading.Barrier(8)

    def call(i):
        client = type(caller)()
        start.wait()
        try:
            return post(client, '{"item": "book"}' if i % 2 else '{"item": "pen"}')
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(8)))
    winner = Execution.objects.get()  # exactly one
    for i, response in enumerate(responses):
        if winner.input["body"]["item"] == ("book" if i % 2 else "pen"):
            assert uid_of(response) == str(winner.uid)
        else:
            assert_error(response, 422, "requestError.idempotencyKeyReused")


@pytest.mark.django_db(transaction=True)
def test_a_sync_call_replayed_on_an_open_api_answers_only_the_first_runs_uid(caller, echo_workflow):
    sync_api(echo_workflow)
    with worker():
        first = post(caller, path="/v1/api/shop/order/sync")
        retry = post(caller, path="/v1/api/shop/order/sync")
    assert first.status_code == 200
    # An open API's replay gives neither the result nor the read key (see above).
    assert retry.status_code == 202 and retry["Idempotent-Replayed"] == "true"
    assert retry.json() == {"response": {"uid": first.json()["response"]["uid"]}}
    assert "key=" not in retry["Location"]
    # The key is the API's, whichever endpoint: /async replays the same run.
    via_async = post(caller)
    assert via_async.status_code == 202 and via_async["Idempotent-Replayed"] == "true"
    assert uid_of(via_async) == uid_of(first)
    assert Execution.objects.count() == 1


@pytest.mark.django_db
def test_the_purge_deletes_expired_keys_only(open_api, settings):
    settings.IOLINKER_IDEMPOTENCY_SECONDS = 3600
    now = timezone.now()
    ages = {"old-1": 7200, "old-2": 3601, "old-3": 86400 * 3, "fresh": 3500, "new": 0}
    IdempotencyKey.objects.bulk_create(
        IdempotencyKey(
            api=open_api, key=key, fingerprint="f", uid=i, created_at=now - timedelta(seconds=age)
        )
        for i, (key, age) in enumerate(ages.items())
    )
    assert idempotency_key_purge(batch_size=2) == 3  # in bounded batches
    assert set(IdempotencyKey.objects.values_list("key", flat=True)) == {"fresh", "new"}
    assert idempotency_key_purge() == 0


@pytest.mark.django_db
def test_the_purge_command_counts_then_deletes_with_yes(open_api, settings):
    IdempotencyKey.objects.create(
        api=open_api, key="k", fingerprint="f", uid=1, created_at=timezone.now()
    )
    expire("k")
    out = StringIO()
    call_command("purge_idempotency_keys", stdout=out)
    assert "Would delete 1 " in out.getvalue() and IdempotencyKey.objects.count() == 1
    call_command("purge_idempotency_keys", "--yes", stdout=out)
    assert "Deleted 1 " in out.getvalue() and not IdempotencyKey.objects.exists()


@pytest.mark.django_db
def test_the_purge_is_scheduled_every_minute():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="triggers.tasks.purge_idempotency_keys")
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1
    assert schedule.repeats < 0


@pytest.mark.django_db
def test_fire_api_takes_an_idempotency_key(open_api):
    def fire(payload):
        out, err = StringIO(), StringIO()
        call_command(
            "fire_api", "shop", "order", "--payload", payload, "--idempotency-key", "op-1",
            stdout=out, stderr=err,
        )  # fmt: skip
        return out.getvalue().strip(), err.getvalue()

    uid, _ = fire('{"item": "x"}')
    again, note = fire('{"item": "x"}')
    assert again == uid and "not started again" in note
    assert Execution.objects.count() == 1
    with pytest.raises(CommandError, match="different request"):
        fire('{"item": "y"}')
