"""Group commit: concurrent triggers share a transaction, nobody answers early."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client

from tests.support.queue import queue_is_redis
from workflows.intake import GroupCommit
from workflows.models import Execution


def test_concurrent_submissions_are_committed_in_shared_batches_before_returning():
    batches, committed = [], set()

    def commit(items):
        time.sleep(0.02)  # a slow commit lets followers gather
        batches.append(list(items))
        committed.update(items)

    intake = GroupCommit(commit)

    def submit(i):
        intake.submit(i)
        assert i in committed  # returned only after its own commit
        return i

    with ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(submit, range(64))) == list(range(64))
    assert sorted(i for batch in batches for i in batch) == list(range(64))
    assert len(batches) < 64 and max(map(len, batches)) > 1


def test_a_failed_batch_fails_every_submission_in_it_and_the_next_batch_proceeds():
    calls = []

    def commit(items):
        calls.append(list(items))
        if len(calls) == 1:
            time.sleep(0.05)
            raise RuntimeError("database is down")

    intake = GroupCommit(commit)
    outcomes = {}
    started = threading.Event()

    def first():
        started.set()
        try:
            intake.submit("a")
        except RuntimeError as exc:
            outcomes["a"] = str(exc)

    leader = threading.Thread(target=first)
    leader.start()
    started.wait()
    time.sleep(0.01)
    intake.submit("b")  # waits behind the failing batch, then commits in the next one
    leader.join()
    assert outcomes == {"a": "database is down"}
    assert calls[-1] == ["b"]


def test_submissions_are_written_by_the_committer_thread_unless_inline():
    threads = []
    GroupCommit(lambda items: threads.append(threading.get_ident())).submit(1)
    assert threads and threads != [threading.get_ident()]
    # Inside a transaction (inline) the caller writes its own run, in that transaction.
    threads.clear()
    GroupCommit(lambda items: threads.append(threading.get_ident()), inline=lambda: True).submit(2)
    assert threads == [threading.get_ident()]


def test_the_committer_gives_its_connection_back_when_idle(monkeypatch):
    import workflows.intake as intake_module

    monkeypatch.setattr(intake_module, "IDLE_SECONDS", 0.05)
    idle = threading.Event()
    intake = GroupCommit(lambda items: None, when_idle=idle.set)
    intake.submit(1)
    assert idle.wait(2)


def test_a_trigger_inside_a_transaction_commits_or_rolls_back_with_it(caller, open_api):
    from django.db import transaction

    class Abort(Exception):
        pass

    def trigger():
        caller.post("/v1/api/shop/order/async", data="{}", content_type="application/json")

    trigger()  # leases this process's uid number (its own durable transaction)
    with pytest.raises(Abort), transaction.atomic():
        trigger()
        assert Execution.objects.count() == 2
        raise Abort
    assert Execution.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_http_triggers_are_all_durable_and_share_queue_messages(open_api):
    def trigger(_):
        response = Client().post(
            "/v1/api/shop/order/async", data='{"a": 1}', content_type="application/json"
        )
        connection.close()
        return response

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(trigger, range(80)))
    assert [r.status_code for r in responses] == [202] * 80
    uids = {int(r.json()["response"]["uid"]) for r in responses}
    assert set(Execution.objects.values_list("uid", flat=True)) == uids
    if not queue_is_redis():
        from django_q.models import OrmQ
        from django_q.signing import SignedPackage

        messages = [SignedPackage.loads(m.payload)["args"][0] for m in OrmQ.objects.all()]
        assert sorted(uid for batch in messages for uid in batch) == sorted(uids)
        assert len(messages) < 80  # runs shared messages (measured: ~25 for 80 here)


@pytest.mark.django_db(transaction=True)
def test_the_committer_recovers_when_its_database_connection_is_lost(monkeypatch, open_api):
    from tests.support.clients import WsgiClient

    if connection.vendor != "postgresql":
        pytest.skip("kills PostgreSQL backends")
    import workflows.intake as intake_module

    monkeypatch.setattr(intake_module, "IDLE_SECONDS", 60)  # keep its connection open
    caller = WsgiClient()

    def trigger():
        return caller.post("/v1/api/shop/order/async", data="{}", content_type="application/json")

    assert trigger().status_code == 202
    with connection.cursor() as cursor:  # e.g. a PostgreSQL restart or failover
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    statuses = [trigger().status_code for _ in range(3)]
    assert statuses[0] in (202, 503)  # the batch on the dead connection may fail...
    assert statuses[1:] == [202, 202]  # ...but not the ones after it
    monkeypatch.setattr(intake_module, "IDLE_SECONDS", 0)
    trigger()  # let the committer give its connection back before the database goes
