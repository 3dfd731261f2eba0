"""Personas (fixtures) and a client for the management API tests in this folder."""

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from tests.test_end_to_end import platform  # noqa: F401 (a fixture of this folder's tests)
from triggers.manage.auth import manage_token_create

BASE = "/v1/manage"


def grant(user: User, *names: str) -> User:
    """Give ``user`` the permissions "app_label.codename"."""
    for name in names:
        app_label, codename = name.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return User.objects.get(pk=user.pk)  # a fresh instance: no cached permissions


class ManageClient:
    """Calls the management API with a staff token (None: anonymous)."""

    def __init__(self, token: str | None = None, client: Client | None = None):
        self.token = token
        self.client = client or Client()

    def call(self, verb: str, path: str, data=None, **headers):
        if self.token is not None:
            headers.setdefault("authorization", f"Token {self.token}")
        # A path under /v1/manage/, or a full URL the API answered (a next page).
        url = path.removeprefix("http://testserver")
        url = url if url.startswith("/") else f"{BASE}/{url}"
        kwargs = {"headers": headers}
        if data is not None:
            kwargs.update(data=json.dumps(data), content_type="application/json")
        return getattr(self.client, verb)(url, **kwargs)

    def get(self, path, **headers):
        return self.call("get", path, **headers)

    def post(self, path, data=None, **headers):
        return self.call("post", path, data, **headers)

    def patch(self, path, data=None, **headers):
        return self.call("patch", path, data, **headers)

    def put(self, path, data=None, **headers):
        return self.call("put", path, data, **headers)


def body(response) -> dict:
    return json.loads(response.content)["response"]


def error(response) -> dict:
    return json.loads(response.content)["response"]["error"]


def _staff(username: str, *perms: str, superuser: bool = False) -> User:
    if superuser:
        return User.objects.create_superuser(username, "", "pw-" + username)
    user = User.objects.create_user(username, "", "pw-" + username, is_staff=True)
    return grant(user, *perms)


VIEW_ALL = ("triggers.view_apidefinition", "workflows.view_workflow", "workflows.view_execution")
EDIT_ALL = (
    *VIEW_ALL,
    "triggers.add_apidefinition",
    "triggers.change_apidefinition",
    "workflows.add_workflow",
    "workflows.change_workflow",
)


@pytest.fixture
def operator(db) -> ManageClient:
    """A superuser, by token: may do everything."""
    return ManageClient(manage_token_create(user=_staff("root", superuser=True), days=None))


@pytest.fixture
def viewer(db) -> ManageClient:
    """Staff with the view permissions only."""
    return ManageClient(manage_token_create(user=_staff("viewer", *VIEW_ALL), days=None))


@pytest.fixture
def editor(db) -> ManageClient:
    """Staff who may add and change APIs and workflows, but not code steps."""
    return ManageClient(manage_token_create(user=_staff("editor", *EDIT_ALL), days=None))


@pytest.fixture
def anonymous(db) -> ManageClient:
    return ManageClient()
