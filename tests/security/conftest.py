"""What the security tests share: the attacker's and the caller's addresses,
the APIs they call and a POST helper, the failure-limit, hash-counting and
allowlisted-API fixtures, and staff clients with chosen permissions."""

import json

import pytest
from django.contrib.auth.models import Permission, User

from tests.test_admin_engine import workflow_form
from triggers.services import auth as auth_services

ATTACKER = "198.51.100.66"
CALLER = "203.0.113.9"


def post(caller, path, *, ip=CALLER, **headers):
    return caller.post(
        path, data="{}", content_type="application/json", headers=headers, REMOTE_ADDR=ip
    )


def retry_after(response) -> int:
    return int(response["Retry-After"])


@pytest.fixture
def failure_limit(settings):
    settings.IOLINKER_AUTH_FAILURE_LIMIT = 3
    settings.IOLINKER_AUTH_FAILURE_WINDOW = 300
    return 3


@pytest.fixture
def hashes(monkeypatch):
    """Counts the slow password hash checks."""
    calls = []
    real = auth_services.check_password
    monkeypatch.setattr(auth_services, "check_password", lambda *a: calls.append(1) or real(*a))
    return calls


PRIVATE = "/v1/api/shop/private/async"
SECURE = "/v1/api/shop/secure/async"
RIGHT = {"user": "alice", "password": "s3cret-pass"}
WRONG = {"user": "alice", "password": "guess"}


@pytest.fixture
def listed_api(token_api):
    token_api.ip_allowlist = "203.0.113.0/24,\n2001:db8::/32"
    token_api.save()
    return token_api


def staff_client(client, *codenames: str):
    user = User.objects.create_user("editor", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


EDITOR = ["add_workflow", "change_workflow", "view_workflow", "add_step", "change_step"]
EDITOR += ["delete_step", "view_step", "view_workflowversion"]


def existing_step_form(workflow, **changes) -> dict:
    """The change form of ``workflow`` as the admin renders it, with ``changes``."""
    steps = list(workflow.steps.order_by("position"))
    data = workflow_form(workflow.name, [{} for _ in steps])
    data["steps-INITIAL_FORMS"] = str(len(steps))
    for i, step in enumerate(steps):
        values = {
            "id": step.pk,
            "workflow": workflow.pk,
            "position": step.position,
            "key": step.key,
            "type": step.type,
            "config": json.dumps(step.config),
            "next": step.next,
            "on_error": step.on_error,
            "error_next": step.error_next,
            "retries": step.retries,
            "retry_interval": step.retry_interval,
            "retry_backoff": step.retry_backoff,
            "timeout": step.timeout or "",
        }
        values.update(changes.get(step.key, {}))
        data.update({f"steps-{i}-{name}": str(value) for name, value in values.items()})
    return data
