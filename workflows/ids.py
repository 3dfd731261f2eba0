"""Execution uids: snowflake ids whose instance number is leased per process.

snowflake-id repeats ids when two processes share an instance number (measured:
thousands of duplicates with four processes), and its generator is neither
thread-safe nor total (``next()`` returns ``None`` when a millisecond's
sequence is used up or the clock went back). So:

* every process (web worker, queue worker, command) leases its own instance
  number from the ``IdLease`` table on first use, after fork, in its own
  committed transaction;
* a lease not renewed for ``LEASE_TTL`` may be taken by another process; a
  holder renews before generating once ``RENEW_AFTER`` (< ``LEASE_TTL``) has
  passed on its own monotonic clock, so it never uses a number that another
  process may already have taken (tolerates machine clock skew up to
  ``LEASE_TTL - RENEW_AFTER``);
* generation is serialised by a lock and waits out an exhausted millisecond.

The execution uid is also the primary key, so a duplicate could never be
stored silently.
"""

import atexit
import logging
import os
import random
import secrets
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from snowflake import MAX_INSTANCE, Snowflake, SnowflakeGenerator

from workflows.errors import UidUnavailable

# A recent epoch: 41 bits of milliseconds last until 2095 instead of 2039.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
EPOCH_MS = int(EPOCH.timestamp() * 1000)
LEASE_TTL = timedelta(minutes=10)
RENEW_AFTER = timedelta(minutes=2)
_MAX_CLOCK_WAIT_S = 2.0

logger = logging.getLogger(__name__)


class _State:
    pid: int | None = None
    owner: str = ""
    instance: int | None = None
    renewed_monotonic: float = 0.0
    generator: SnowflakeGenerator | None = None


_state = _State()
_lock = threading.Lock()


def next_uid() -> int:
    """A new process-unique, time-ordered 63-bit id. Call outside a transaction."""
    with _lock:
        if (
            _state.pid != os.getpid()
            or time.monotonic() - _state.renewed_monotonic > RENEW_AFTER.total_seconds()
        ):
            _hold_lease()
        deadline = None
        while True:
            uid = next(_state.generator)
            if uid is not None:
                return uid
            # Sequence exhausted within this millisecond, or the clock stepped back.
            now = time.monotonic()
            deadline = deadline or now + _MAX_CLOCK_WAIT_S
            if now > deadline:
                raise UidUnavailable("System clock moved backwards; refusing to issue uids")
            time.sleep(0.0002)


def uid_datetime(uid: int) -> datetime:
    """When the uid was issued (UTC)."""
    return datetime.fromtimestamp(Snowflake.parse(uid, EPOCH_MS).seconds, tz=UTC)


def uid_at(when: datetime) -> int:
    """The smallest uid issued at or after ``when``: a time range of runs is a
    range of their primary key (the admin's time filter and dashboard)."""
    ms = int(when.timestamp() * 1000) - EPOCH_MS
    return max(ms, 0) << 22


def current_instance() -> int | None:
    return _state.instance if _state.pid == os.getpid() else None


def reset() -> None:
    """Forget this process's lease (tests roll back the database between cases)."""
    with _lock:
        _state.pid = None
        _state.instance = None
        _state.generator = None


def _hold_lease() -> None:
    from workflows.models import IdLease

    pid = os.getpid()
    now = timezone.now()
    # durable=True: a lease must commit on its own. Taken inside a caller's
    # transaction, a rollback would erase it while this process kept the number.
    with transaction.atomic(durable=True):
        if _state.pid == pid and _state.instance is not None:
            renewed = IdLease.objects.filter(instance=_state.instance, owner=_state.owner).update(
                renewed_at=now
            )
            if renewed:
                _state.renewed_monotonic = time.monotonic()
                return
    owner = f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}"
    instance = _claim(IdLease, owner)
    _state.pid = pid
    _state.owner = owner
    _state.instance = instance
    _state.renewed_monotonic = time.monotonic()
    _state.generator = SnowflakeGenerator(instance, epoch=EPOCH_MS)
    atexit.register(_release, pid, owner)


def _release(pid: int, owner: str) -> None:
    """Give the number back when this process exits normally (short-lived
    processes such as `fire_api` would otherwise hold one for LEASE_TTL)."""
    if os.getpid() != pid:
        return  # a forked child inherited the hook; the number is the parent's
    from workflows.models import IdLease

    try:
        IdLease.objects.filter(owner=owner).delete()
    except DatabaseError:
        logger.debug("Could not release uid lease %s", owner, exc_info=True)


def _claim(IdLease, owner: str) -> int:  # noqa: N803 - the model class
    for _ in range(50):
        now = timezone.now()
        cutoff = now - LEASE_TTL
        with transaction.atomic(durable=True):
            expired = list(
                IdLease.objects.filter(renewed_at__lt=cutoff)
                .order_by("renewed_at")
                .values_list("instance", flat=True)[:16]
            )
            for instance in expired:
                taken = IdLease.objects.filter(instance=instance, renewed_at__lt=cutoff).update(
                    owner=owner, renewed_at=now
                )
                if taken:
                    return instance
            used = set(IdLease.objects.values_list("instance", flat=True))
        free = [i for i in range(MAX_INSTANCE + 1) if i not in used]
        if not free:
            raise UidUnavailable("All 1024 uid instance numbers are leased by live processes")
        # Random, not lowest: processes starting together rarely race for one number.
        instance = random.choice(free)  # noqa: S311 - not security sensitive
        try:
            with transaction.atomic(durable=True):
                IdLease.objects.create(instance=instance, owner=owner, renewed_at=now)
            return instance
        except IntegrityError:
            continue  # another process took it first
    raise UidUnavailable("Could not lease a uid instance number")
