"""Execution uids stay unique across processes (each leases its own instance number)."""

import json
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from tests.support.environment import BASE_DIR
from tests.support.processes import child_env
from workflows import ids
from workflows.models import IdLease

SCRIPT = str(BASE_DIR / "tests" / "scripts" / "make_uids.py")


def make_uids_in_processes(processes: int, count: int, *extra: str) -> list[dict]:
    """Start the children, let them set up, then release them at once (a start
    file, not a start time: a busy machine may take seconds to start them)."""
    barrier = Path(tempfile.mkdtemp())
    children = [
        subprocess.Popen(
            [sys.executable, SCRIPT, str(count), str(barrier), *extra],
            stdout=subprocess.PIPE,
            env=child_env(),
            cwd=BASE_DIR,
        )
        for _ in range(processes)
    ]
    deadline = time.monotonic() + 120
    while len(list(barrier.glob("ready-*"))) < processes:
        assert time.monotonic() < deadline, "the children did not get ready"
        time.sleep(0.01)
    (barrier / "go").touch()
    results = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        results.append(json.loads(out))
    return results


@pytest.mark.slow
def test_uids_are_unique_across_concurrent_processes(transactional_db):
    results = make_uids_in_processes(4, 25_000)
    uids = [uid for result in results for uid in result["uids"]]
    assert len(uids) == 100_000
    assert len(set(uids)) == len(uids)
    instances = {result["instance"] for result in results}
    assert len(instances) == 4  # one leased instance number per process
    # Each process gave its number back when it exited.
    assert not IdLease.objects.filter(instance__in=instances).exists()
    assert all(0 < uid < 2**63 for uid in uids)


@pytest.mark.slow
def test_the_uniqueness_check_catches_processes_sharing_an_instance_number(transactional_db):
    # Control for the test above: the same harness without leases finds duplicates.
    results = make_uids_in_processes(4, 25_000, "7")
    uids = [uid for result in results for uid in result["uids"]]
    assert len(set(uids)) < len(uids)


def test_uids_are_time_ordered_and_carry_their_time(db):
    first, second = ids.next_uid(), ids.next_uid()
    assert second > first
    assert abs(ids.uid_datetime(first) - timezone.now()) < timedelta(seconds=5)


def test_a_lease_that_lapsed_is_given_up_and_a_new_number_taken(db):
    ids.next_uid()
    mine = ids.current_instance()
    # Another process took over our number after it lapsed.
    IdLease.objects.filter(instance=mine).update(owner="other:1:x")
    ids._state.renewed_monotonic = 0  # our renewal is due
    ids.next_uid()
    assert ids.current_instance() != mine
    assert IdLease.objects.get(instance=mine).owner == "other:1:x"


def test_an_expired_lease_of_a_dead_process_is_reused(db):
    stale = timezone.now() - ids.LEASE_TTL - timedelta(seconds=1)
    IdLease.objects.create(instance=42, owner="dead:1:x", renewed_at=stale)
    ids.next_uid()
    assert ids.current_instance() == 42
    assert IdLease.objects.get(instance=42).owner != "dead:1:x"


def test_a_live_lease_is_never_taken(db):
    IdLease.objects.bulk_create(
        IdLease(instance=i, owner="live", renewed_at=timezone.now()) for i in range(1024) if i != 5
    )
    ids.next_uid()
    assert ids.current_instance() == 5
