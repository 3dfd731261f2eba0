import pytest
from django.core.cache import caches
from django.test import Client
from django.utils import timezone

from tests.support.clients import WsgiClient
from tests.support.environment import REQUIRE_SERVICES
from tests.support.queue import queue_is_redis
from triggers import services as trigger_services
from triggers import throttle
from triggers.models import ApiDefinition, AuthMode
from workflows import ids, intake, notify
from workflows.models import Execution, Workflow
from workflows.services import execution_queue, workflow_create
from workflows.watch import run_watch_stop


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch):
    # The committer thread closes its connection as soon as it has nothing to
    # write, so none is left open when the test database is dropped.
    monkeypatch.setattr(intake, "IDLE_SECONDS", 0)
    if queue_is_redis():
        # Unlike the ORM broker's table, a Redis queue is not rolled back between tests.
        from django_q.brokers import get_broker

        get_broker().purge_queue()
    yield
    # The test database is rolled back between tests: forget the uid lease
    # and verified credentials this process remembered.
    ids.reset()
    caches["credentials"].clear()
    trigger_services.api_cache_clear()
    throttle.limits_reset()  # counters and blocks (in Redis too, under our own prefix)
    from workflows.services.queueing import process_caches_clear

    process_caches_clear()
    notify.listener_stop()
    run_watch_stop()  # its connection would keep the test database from being dropped


def execution_start(*, workflow: Workflow, trigger_input: dict, api=None) -> Execution:
    """Queue a run as a call of an API does (workflows.services.execution_queue)
    and give it back in memory."""
    now = timezone.now()
    uid = execution_queue(
        workflow_id=workflow.pk, api_id=api.pk if api else None, trigger_input=trigger_input
    )
    return Execution(
        uid=uid, api=api, workflow=workflow, input=trigger_input, created_at=now, queued_at=now
    )


@pytest.fixture
def outbound_loopback(settings):
    """Outbound requests may go to loopback (tests of unreachable local ports;
    the test servers of tests/support/servers.py allow their own address themselves)."""
    import ipaddress

    settings.IOLINKER_OUTBOUND_ALLOW = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


def needs_service(reason: str | None):
    """Skip for a missing PostgreSQL/Redis, but fail when CI requires them."""
    if reason is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"IOLINKER_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def make_workflow(name: str = "wf", steps=()) -> Workflow:
    return workflow_create(name=name, steps=list(steps))


ECHO_STEPS = [
    (
        "shape",
        "transform",
        {"value": {"body": "{{ body }}", "query": "{{ query }}", "method": "{{ method }}"}},
    ),
    ("result", "output", {"value": "{{ steps.shape }}"}),
]


@pytest.fixture
def echo_workflow(db):
    return make_workflow("echo", ECHO_STEPS)


def make_api(workflow, *, module="shop", method="order", http_method="POST", **kwargs):
    return ApiDefinition.objects.create(
        module=module, method=method, http_method=http_method, workflow=workflow, **kwargs
    )


@pytest.fixture
def open_api(echo_workflow):
    """An enabled POST API without authentication."""
    return make_api(echo_workflow, auth_mode=AuthMode.NONE)


@pytest.fixture
def token_api(echo_workflow):
    """A token-auth POST API; its plain token is on `.plain_token`."""
    api = make_api(echo_workflow, method="secure", auth_mode=AuthMode.TOKEN)
    api.plain_token = trigger_services.api_set_token(api=api)
    return api


@pytest.fixture
def password_api(echo_workflow):
    """A user+password POST API: user `alice`, password `s3cret-pass`."""
    api = make_api(echo_workflow, method="private", auth_mode=AuthMode.PASSWORD)
    trigger_services.api_set_password(api=api, user="alice", password="s3cret-pass")
    return api


@pytest.fixture(params=["wsgi", "django"])
def caller(request):
    """A client of the public API: through the production WSGI application (whose
    trigger path skips Django's handler) and through Django's own handler."""
    return WsgiClient() if request.param == "wsgi" else Client()
