"""Start-up checks of the project (run by every management command, `serve` too)."""

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from iolinker.sqlite3.base import database_file_secure, on_disk


@checks.register()
def sqlite_files_private(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """SQLite database files only their owner can read (iolinker/sqlite3/base.py):
    made so, or `serve` refuses to start, before any web process opens them."""
    problems = []
    for alias in connections:
        settings_dict = connections.settings[alias]
        if not settings_dict["ENGINE"].endswith("sqlite3") or not on_disk(settings_dict["NAME"]):
            continue
        try:
            database_file_secure(str(settings_dict["NAME"]))
        except ImproperlyConfigured as exc:
            problems.append(checks.Error(str(exc), id="iolinker.E001"))
    return problems
