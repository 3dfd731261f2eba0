"""Django's SQLite backend, with database files only their owner can read.

The database holds session keys, password hashes and callback secrets: readable
by anyone else on the machine (a ``code`` step runs as ``nobody``), every stored
admin session would be a working cookie. SQLite creates a new database with
0644 less the process umask, and its ``-wal``, ``-shm`` and ``-journal`` files
with the mode of the database file. So before each new connection:

* a missing database file is created 0600 (its missing directories 0700);
* an existing one, or one of its side files, that group or others may use
  loses those permission bits (0644 becomes 0600); if that is not allowed (the
  file belongs to someone else), connecting raises ``ImproperlyConfigured`` and
  the start-up check ``iolinker.E001`` (iolinker/checks.py) stops every command.

One ``stat`` per file per new connection (connections are kept, CONN_MAX_AGE).
"""

import contextlib
import os
import stat
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base

SIDE_FILES = ("-wal", "-shm", "-journal")
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def database_file_secure(name: str) -> None:
    """Create ``name`` 0600 if missing, or make it and its side files 0600."""
    path = Path(name)
    if not path.exists():
        path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        # (FileExistsError: another process created it meanwhile; checked below.)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SIDE_FILES)):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            try:
                os.chmod(candidate, mode & 0o700)
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"The SQLite file {candidate} can be read by other users (mode "
                    f"{mode:o}) and cannot be made private: {exc.strerror}. Make it "
                    f"0600 and owned by the user running iolinker."
                ) from None


def on_disk(name) -> bool:
    name = str(name)
    return bool(name) and name != ":memory:" and not name.startswith("file:")


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params):
        # Django always opens with uri=True: a plain path is still a path, and
        # "file:" names (in-memory test databases) are left alone.
        if on_disk(conn_params.get("database", "")):
            database_file_secure(str(conn_params["database"]))
        return super().get_new_connection(conn_params)
