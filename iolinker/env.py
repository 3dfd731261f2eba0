"""Strict readers for settings taken from environment variables.

Each helper raises ``ImproperlyConfigured`` on a malformed value instead of
silently falling back, so a typo in a deployment fails at start-up.
"""

import ipaddress
import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "", *, environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(name, default).strip()


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] = os.environ) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {value}")
    return value


def env_list(
    name: str, default: list[str], *, environ: Mapping[str, str] = os.environ
) -> list[str]:
    raw = environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(
    name: str, *, environ: Mapping[str, str] = os.environ
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IP networks (CIDRs; a bare address is a /32 or /128)."""
    networks = []
    for item in env_list(name, [], environ=environ):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must be comma-separated IP networks (CIDRs), got {item!r}"
            ) from None
    return tuple(networks)


def database_from_url(
    url: str, *, conn_max_age: int, health_checks: bool = False, pool_size: int = 0
) -> dict:
    """Django DATABASES entry for a ``postgres://`` or ``sqlite:///`` URL.

    With ``pool_size`` PostgreSQL connections come from a psycopg pool of at most
    that many per process, whatever the number of request threads.
    """
    import dj_database_url

    try:
        config = dj_database_url.parse(
            url, conn_max_age=conn_max_age, conn_health_checks=health_checks
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    engine = config.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        return sqlite_database(config["NAME"])
    if not engine.endswith("postgresql"):
        raise ImproperlyConfigured(
            f"DATABASE_URL must name PostgreSQL or SQLite, got engine {engine!r}"
        )
    if pool_size:
        config["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django returns them
        config.setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": pool_size,
            "timeout": 10,
        }
    return config


def sqlite_database(path: str) -> dict:
    """SQLite tuned for concurrent web and worker processes.

    WAL lets readers proceed beside one writer; IMMEDIATE transactions take the
    write lock up front so two writers queue on the busy timeout instead of
    failing with "database is locked" halfway through (see STACK-NOTES). The
    backend is Django's, with database files only their owner can read
    (iolinker/sqlite3/base.py), wherever ``path`` is.
    """
    return {
        "ENGINE": "iolinker.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            # synchronous=FULL: a commit survives power loss, so an answered uid
            # always resolves (NORMAL may lose the last commits in WAL mode).
            "init_command": (
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
            ),
        },
        "TEST": {"NAME": str(path).removesuffix(".sqlite3") + "-test.sqlite3"},
    }
