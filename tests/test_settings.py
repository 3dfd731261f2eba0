"""Settings come from the environment through strict helpers."""

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from iolinker.env import database_from_url, env_bool, env_int, env_list
from tests.support.environment import BASE_DIR


def test_env_helpers_read_valid_values():
    env = {"A": "true", "B": "0", "N": " 42 ", "L": "a, b,,c"}
    assert env_bool("A", False, environ=env) is True
    assert env_bool("B", True, environ=env) is False
    assert env_bool("MISSING", True, environ=env) is True
    assert env_int("N", 1, environ=env) == 42
    assert env_list("L", [], environ=env) == ["a", "b", "c"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: env_bool("X", False, environ={"X": "maybe"}),
        lambda: env_int("X", 1, environ={"X": "ten"}),
        lambda: env_int("X", 1, minimum=1, environ={"X": "0"}),
        lambda: database_from_url("mysql://root@localhost/db", conn_max_age=0),
        lambda: database_from_url("nonsense", conn_max_age=0),
    ],
)
def test_malformed_values_fail_loudly(call):
    with pytest.raises(ImproperlyConfigured):
        call()


def test_database_urls_select_postgresql_or_tuned_sqlite():
    pg = database_from_url("postgres://postgres@127.0.0.1:5432/iolinker", conn_max_age=600)
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["NAME"], pg["HOST"], pg["PORT"], pg["USER"]) == (
        "iolinker",
        "127.0.0.1",
        5432,
        "postgres",
    )
    assert pg["CONN_MAX_AGE"] == 600 and pg["CONN_HEALTH_CHECKS"] is False
    lite = database_from_url("sqlite:////tmp/x.sqlite3", conn_max_age=0)
    assert lite["NAME"] == "/tmp/x.sqlite3"
    assert lite["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert "journal_mode=WAL" in lite["OPTIONS"]["init_command"]


def test_a_malformed_setting_stops_start_up_with_its_name():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={"PATH": "/usr/bin:/bin", "IOLINKER_MAX_BODY_BYTES": "lots"},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "IOLINKER_MAX_BODY_BYTES must be an integer" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("IOLINKER_CODE_SANDBOX", "off", "IOLINKER_CODE_SANDBOX must be isolated or unisolated"),
        ("IOLINKER_CODE_TMP_MB", "0", "IOLINKER_CODE_TMP_MB must be >= 1"),
    ],
)
def test_malformed_code_sandbox_settings_stop_start_up(name, value, message):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={"PATH": "/usr/bin:/bin", name: value},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert message in result.stderr
