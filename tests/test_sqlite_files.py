"""SQLite database files are readable by their owner only, wherever they are
(``DATABASE_URL=sqlite:////anywhere``): a world-readable database would hand
session keys, password hashes and callback secrets to any local process (a
``code`` step runs as ``nobody``)."""

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import ConnectionHandler

from iolinker.env import database_from_url
from tests.support.environment import BASE_DIR


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def open_connection(path):
    """A new sqlite3 connection opened by the configured backend, as the platform
    opens one (its init_command included: WAL)."""
    handler = ConnectionHandler({"default": database_from_url(f"sqlite:///{path}", conn_max_age=0)})
    backend = handler["default"]
    return backend.get_new_connection(backend.get_connection_params())


def manage(*args: str, database: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["DATABASE_URL"] = f"sqlite:///{database}"
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.umask(0o022),  # the usual umask: new files 0644
    )


@pytest.mark.slow
def test_a_new_database_outside_var_is_private_after_migrate_and_with_its_wal(tmp_path):
    database = tmp_path / "fresh" / "data" / "iolinker.sqlite3"  # no such folders yet
    result = manage("migrate", "--no-input", database=str(database))
    assert result.returncode == 0, result.stderr
    assert mode(database) == 0o600
    assert mode(database.parent) == 0o700
    # The WAL and shared-memory files appear while connections are open.
    with umask(0o022):
        writer, reader = open_connection(database), open_connection(database)
        try:
            writer.execute("DELETE FROM django_session")
            writer.commit()
            reader.execute("SELECT count(*) FROM django_migrations").fetchall()
            wal, shm = (database.with_name(database.name + s) for s in ("-wal", "-shm"))
            assert wal.exists() and shm.exists()
            assert (mode(wal), mode(shm)) == (0o600, 0o600)
        finally:
            writer.close()
            reader.close()


def test_a_world_readable_database_and_its_side_files_are_made_private(tmp_path):
    database = tmp_path / "old.sqlite3"
    with umask(0o022):
        plain = sqlite3.connect(database)  # as SQLite creates it: 0644
        plain.execute("PRAGMA journal_mode=WAL")
        plain.execute("CREATE TABLE t (x)")
        plain.execute("INSERT INTO t VALUES (1)")
        plain.commit()
        wal, shm = (tmp_path / f"old.sqlite3{s}" for s in ("-wal", "-shm"))
        assert (mode(database), mode(wal), mode(shm)) == (0o644, 0o644, 0o644)
        connection = open_connection(database)
        try:
            assert connection.execute("SELECT x FROM t").fetchall() == [(1,)]
            assert (mode(database), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
        finally:
            connection.close()
            plain.close()


def test_a_database_that_cannot_be_made_private_is_refused(tmp_path, monkeypatch):
    database = tmp_path / "theirs.sqlite3"
    database.touch(mode=0o644)
    os.chmod(database, 0o644)

    def not_the_owner(path, mode):
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", not_the_owner)
    with pytest.raises(ImproperlyConfigured, match=r"theirs\.sqlite3 can be read by other users"):
        open_connection(database)
    assert mode(database) == 0o644


@pytest.mark.slow
def test_start_up_stops_on_a_database_that_cannot_be_made_private(tmp_path):
    # Root may chmod anything: the file is made unchangeable by its immutable bit
    # where the file system has one; otherwise this case is the one above.
    database = tmp_path / "theirs.sqlite3"
    database.touch()
    os.chmod(database, 0o644)
    if subprocess.run(["chattr", "+i", str(database)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here (the unit test above covers the refusal)")
    try:
        result = manage("check", database=str(database))
    finally:
        subprocess.run(["chattr", "-i", str(database)], check=True)
    assert result.returncode != 0
    assert "iolinker.E001" in result.stderr and "can be read by other users" in result.stderr
