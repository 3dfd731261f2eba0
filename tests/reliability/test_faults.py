"""Faults, with real processes (`manage.py serve`: granian + qcluster): nothing
accepted is lost, nothing recorded runs twice, and service comes back by itself.

Each test runs with the broker of the suite's configuration: the ORM broker, or
Redis when the suite runs with REDIS_URL (CI runs both). Database faults need
PostgreSQL, broker faults Redis: a TCP proxy the test cuts stands between the
platform and the shared server, which is never stopped.
"""

import json
import os
import time
from collections import Counter
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from tests.conftest import make_api, make_workflow, needs_service
from tests.support.clients import post_many
from tests.support.environment import redis_url_or_reason
from tests.support.processes import Cluster, Platform, rss_mb
from tests.support.processes import test_database_url as database_url_of_test
from tests.support.queue import queue_is_redis, queue_message_uids
from tests.support.servers import RecordingServer, TcpProxy
from triggers.models import AuthMode
from workflows.ids import next_uid
from workflows.lifecycle import execution_recover_stale
from workflows.models import FINAL_STATUSES, Execution, ExecutionStatus, StepRun
from workflows.services import queueing

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SIMPLE = [
    ("shape", "transform", {"value": {"n": "{{ body.n }}"}}),
    ("out", "output", {"value": "{{ steps.shape.n }}"}),
]


@pytest.fixture
def broker():
    """The suite's broker: Redis (its URL) when the suite runs with REDIS_URL."""
    if queue_is_redis():
        url, reason = redis_url_or_reason()
        needs_service(reason or None)
        return url
    return None


def use_platform_queue(monkeypatch, platform: Platform) -> None:
    """Messages this process sends (the reaper's re-queues) go to the platform's
    queue, as the platform's own sweeper would send them."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    queueing.process()
    # django-q2 signs messages with the queue's name as the salt (its PREFIX).
    monkeypatch.setattr(Conf, "PREFIX", platform.queue_name)
    monkeypatch.setattr(queueing.ProcessState, "broker", get_broker(list_key=platform.queue_name))


def wait_for(predicate, *, timeout: float, what: str, every: float = 0.2, between=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        if between is not None:
            between()
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def all_final(uids) -> bool:
    return not Execution.objects.filter(uid__in=uids).exclude(status__in=FINAL_STATUSES).exists()


def accepted_uids(results) -> list[int]:
    return [int(body["response"]["uid"]) for status, body in results if status == 202]


def assert_unavailable(results) -> None:
    for status, body in results:
        assert status == 503, (status, body)
        assert body["response"]["error"]["code"] == "serverError.unavailable", body


def test_a_cluster_killed_mid_load_loses_no_run_and_repeats_no_recorded_step(
    broker, monkeypatch, settings
):
    # Redis is at-most-once: messages the dead cluster had taken are pushed again
    # by the reaper once their runs have been queued this long.
    settings.IOLINKER_REQUEUE_AFTER = 3
    with RecordingServer() as server:
        workflow = make_workflow(
            "load",
            [
                ("notify", "http", {"url": server.url, "json": {"n": "{{ body.n }}"}}),
                ("work", "code", {"code": "import time\ntime.sleep(0.05)\nreturn 1"}),
                ("out", "output", {"value": "{{ body.n }}"}),
            ],
        )
        make_api(workflow, module="load", method="run", auth_mode=AuthMode.NONE)
        platform = Platform(
            redis_url=broker, env={"IOLINKER_RUN_LEASE_SECONDS": "2"}, qcluster=False
        ).start()
        cluster = Cluster(platform.env).start()
        use_platform_queue(monkeypatch, platform)
        try:
            url = f"{platform.base_url}/v1/api/load/run/async"
            results = post_many(url, [{"n": n} for n in range(150)])
            wait_for(lambda: len(server.requests) >= 60, timeout=60, what="runs under way")
            cluster.kill()  # SIGKILL: the cluster and all its workers, mid-run
            killed_at = len(server.requests)
            cluster = Cluster(platform.env).start()
            results += post_many(url, [{"n": n} for n in range(150, 300)])
            uids = accepted_uids(results)
            assert len(uids) == 300, [r for r in results if r[0] != 202][:3]
            wait_for(
                lambda: all_final(uids),
                timeout=180,
                every=1,
                what="every run to end",
                between=execution_recover_stale,  # the reaper, as its schedule runs it
            )
        finally:
            cluster.stop()
            platform.stop()
    assert killed_at < 300  # the kill came in the middle of the load
    runs = {e.uid: e for e in Execution.objects.filter(uid__in=uids)}
    assert len(runs) == 300
    assert {e.status for e in runs.values()} == {ExecutionStatus.SUCCEEDED}
    recovered = {e.output for e in runs.values() if e.recoveries}
    assert recovered, "no run was in progress when the cluster was killed"
    # No step was recorded twice ...
    doubled = (
        StepRun.objects.filter(execution_id__in=uids)
        .values("execution_id", "key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not doubled.exists()
    assert StepRun.objects.filter(execution_id__in=uids).count() == 3 * 300
    # ... and no recorded step ran again: every run notified exactly once, except
    # that a run whose http step was in flight at the kill (sent, not yet
    # recorded) may have sent it once more when it resumed.
    effects = Counter(int(json.loads(r["body"])["n"]) for r in server.requests)
    assert set(effects) == set(range(300))
    repeated = {n for n, count in effects.items() if count > 1}
    assert all(effects[n] == 2 for n in repeated)
    assert repeated <= recovered, (repeated, recovered)


def test_a_web_process_killed_mid_burst_leaves_no_run_without_its_message(
    broker, monkeypatch, settings
):
    make_api(make_workflow("burst", SIMPLE), module="burst", method="run", auth_mode="none")
    platform = Platform(redis_url=broker, qcluster=False).start()
    cluster = None
    try:
        url = f"{platform.base_url}/v1/api/burst/run/async"
        answered = []
        killed = []

        def kill_web_once():
            answered.append(1)
            if len(answered) == 150 and not killed:
                for pid in platform.web_worker_pids():
                    os.kill(pid, 9)  # SIGKILL the granian worker mid-burst
                    killed.append(pid)

        results = post_many(
            url, [{"n": n} for n in range(600)], threads=16, on_answer=kill_web_once
        )
        assert killed
        # granian starts a new worker; triggers are answered again.
        wait_for(
            lambda: post_many(url, [{"n": -1}], threads=1)[0][0] == 202,
            timeout=30,
            what="the web server to serve again",
        )
        failed = [r for r in results if r[0] != 202]
        assert all(status in (0, 503) for status, _ in failed), failed[:3]
        uids = accepted_uids(results)
        stored = set(Execution.objects.values_list("uid", flat=True))
        assert set(uids) <= stored  # every uid answered resolves
        assert Execution.objects.exclude(status=ExecutionStatus.QUEUED).count() == 0
        messages = queue_message_uids(platform.queue_name)
        if not queue_is_redis():
            # One statement (one transaction on SQLite): runs and messages together.
            assert Counter(messages) == Counter(stored)
        else:
            # Runs commit before their message is pushed: a process killed in
            # between leaves queued runs without one; the sweeper pushes them again.
            # Make one such run on purpose (the kill rarely lands in that window).
            workflow = Execution.objects.first().workflow
            Execution.objects.create(
                uid=next_uid(),
                workflow=workflow,
                input={"body": {"n": 0}},
                queued_at=timezone.now() - timedelta(hours=1),
            )
            stored = set(Execution.objects.values_list("uid", flat=True))
            orphans = stored - set(messages)
            assert orphans
            settings.IOLINKER_REQUEUE_AFTER = 0
            use_platform_queue(monkeypatch, platform)
            assert execution_recover_stale()["requeued"] >= len(orphans)
            assert stored <= set(queue_message_uids(platform.queue_name))
        # And every stored run runs.
        cluster = Cluster(platform.env).start()
        wait_for(lambda: all_final(stored), timeout=120, every=0.5, what="every run to end")
        assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}
    finally:
        if cluster:
            cluster.stop()
        platform.stop()


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _outage(platform: Platform, proxy: TcpProxy, url: str) -> list[int]:
    """Triggers before, during and after an outage of what ``proxy`` stands for:
    503 envelopes while it is down, then 202 again without a restart. The
    accepted uids."""
    before = post_many(url, [{"n": n} for n in range(5)])
    assert [status for status, _ in before] == [202] * 5
    # Cut while the workers wait (a run cut mid-way is the reaper's: see the
    # cluster test), so that what follows shows them coming back by themselves.
    wait_for(lambda: all_final(accepted_uids(before)), timeout=60, what="the first runs")
    proxy.cut()
    uids_before = set(Execution.objects.values_list("uid", flat=True))
    assert_unavailable(post_many(url, [{"n": n} for n in range(8)], timeout=60))
    # Twice: whatever reconnect back-off the first round started.
    assert_unavailable(post_many(url, [{"n": n} for n in range(4)], timeout=60))
    proxy.restore()
    during = []

    def serves_again() -> bool:
        result = post_many(url, [{"n": -1}], threads=1, timeout=60)
        during.extend(result)
        return result[0][0] == 202

    wait_for(serves_again, timeout=60, every=0.5, what="service to resume")
    assert {status for status, _ in during} <= {202, 503}, during
    after = post_many(url, [{"n": n} for n in range(100, 110)])
    assert [status for status, _ in after] == [202] * 10
    uids = accepted_uids(before + during + after)
    stored = set(Execution.objects.values_list("uid", flat=True))
    assert set(uids) <= stored  # no uid that does not resolve
    # Nothing half-written stayed from the outage: every run made since then was
    # answered (a commit whose acknowledgement was lost would show here).
    assert stored - uids_before - set(uids) == set()
    return uids


def test_database_unreachable_answers_503_then_service_resumes(broker):
    if connection.vendor != "postgresql":
        pytest.skip("needs the suite on PostgreSQL (DATABASE_URL=postgres://…)")
    settings_dict = connection.settings_dict
    upstream = (settings_dict["HOST"] or "127.0.0.1", int(settings_dict["PORT"] or 5432))
    make_api(make_workflow("db", SIMPLE), module="db", method="run", auth_mode="none")
    with TcpProxy(*upstream) as proxy:
        database_url = _proxied(database_url_of_test(), proxy.port)
        platform = Platform(redis_url=broker, env={"DATABASE_URL": database_url}).start()
        try:
            uids = _outage(platform, proxy, f"{platform.base_url}/v1/api/db/run/async")
            # The workers came back by themselves too: every accepted run ends.
            wait_for(lambda: all_final(uids), timeout=120, every=0.5, what="every run to end")
        finally:
            platform.stop()
    assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}


def test_redis_unreachable_answers_503_then_service_resumes(broker):
    if broker is None:
        pytest.skip("needs the suite on the Redis broker (REDIS_URL=redis://…)")
    parts = urlsplit(broker)
    make_api(make_workflow("redis", SIMPLE), module="redis", method="run", auth_mode="none")
    with TcpProxy(parts.hostname, parts.port or 6379) as proxy:
        platform = Platform(redis_url=_proxied(broker, proxy.port)).start()
        try:
            uids = _outage(platform, proxy, f"{platform.base_url}/v1/api/redis/run/async")
            wait_for(lambda: all_final(uids), timeout=120, every=0.5, what="every run to end")
        finally:
            platform.stop()
    assert set(Execution.objects.values_list("status", flat=True)) == {"succeeded"}


SOAK_TRIGGERS = int(os.environ.get("IOLINKER_SOAK_TRIGGERS", "5000"))


def test_soak_loses_nothing_duplicates_nothing_and_memory_stays_flat(broker):
    """The CI-sized soak (IOLINKER_SOAK_TRIGGERS, 5,000); `bench/run.py --soak`
    is the full one (docs/reliability.md)."""
    make_api(make_workflow("soak", SIMPLE), module="soak", method="run", auth_mode="none")
    platform = Platform(redis_url=broker).start()
    url = f"{platform.base_url}/v1/api/soak/run/async"
    try:
        # Warm-up: imports, caches and pools settle before the first sample.
        warm = post_many(url, [{"n": n} for n in range(SOAK_TRIGGERS // 5)])
        wait_for(lambda: all_final(accepted_uids(warm)), timeout=120, every=0.5, what="warm-up")
        first = {kind: max(map(rss_mb, pids)) for kind, pids in platform.pids().items()}
        rest = post_many(url, [{"n": n} for n in range(SOAK_TRIGGERS // 5, SOAK_TRIGGERS)])
        results = warm + rest
        uids = accepted_uids(results)
        wait_for(lambda: all_final(uids), timeout=600, every=1, what="every run to end")
        last = {kind: max(map(rss_mb, pids)) for kind, pids in platform.pids().items()}
    finally:
        platform.stop()
    assert len(uids) == SOAK_TRIGGERS, [r for r in results if r[0] != 202][:3]  # none refused
    assert len(set(uids)) == len(uids)  # no duplicate uid
    runs = Execution.objects.filter(uid__in=uids)
    assert runs.count() == SOAK_TRIGGERS  # none lost
    assert set(runs.values_list("status", flat=True)) == {"succeeded"}
    assert not runs.exclude(attempts=1).exists()  # none claimed twice
    assert StepRun.objects.count() == 2 * SOAK_TRIGGERS  # no step run twice
    assert sorted(runs.values_list("output", flat=True)) == list(range(SOAK_TRIGGERS))
    for kind in ("web", "cluster"):
        growth = last[kind] - first[kind]
        print(f"soak RSS {kind}: {first[kind]:.0f} -> {last[kind]:.0f} MB")
        assert growth < max(20.0, 0.25 * first[kind]), (kind, first[kind], last[kind])
