"""Refused trigger calls, counted per minute (the dashboard, the API List).

Refusals are rare and cheap to count: one UPSERT each into a minute bucket.
Accepted calls are not counted here: each one is its execution row, counted
from there, so the trigger path stays one query.
"""

import logging
from datetime import datetime, timedelta

from django.db import DatabaseError, connection, transaction
from django.db.models import Sum
from django.utils import timezone

from triggers.models import TriggerStat

logger = logging.getLogger(__name__)


def trigger_refusal_record(*, api_id: int | None, code: str, status: int) -> None:
    """Count one refused call (never raises: a count is not worth a caller's error)."""
    minute = timezone.now().replace(second=0, microsecond=0)
    table = connection.ops.quote_name(TriggerStat._meta.db_table)
    sql = (
        f"INSERT INTO {table} (minute, api_id, code, status, refused) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, 1) ON CONFLICT (minute, api_id, code, status) "
        f"DO UPDATE SET refused = {table}.refused + 1"
    )
    params = [connection.ops.adapt_datetimefield_value(minute), api_id or 0, code[:64], status]
    try:
        # A savepoint inside a caller's transaction: a failure here must not break it.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    except DatabaseError:
        logger.warning("Could not count a refused trigger call", exc_info=True)


def trigger_refusals_since(since: datetime) -> int:
    return (
        TriggerStat.objects.filter(minute__gte=_minute(since)).aggregate(n=Sum("refused"))["n"] or 0
    )


def trigger_refusals_by_api(*, api_ids: list[int], since: datetime) -> dict[int, int]:
    rows = (
        TriggerStat.objects.filter(minute__gte=_minute(since), api_id__in=api_ids)
        .values("api_id")
        .annotate(n=Sum("refused"))
    )
    return {row["api_id"]: row["n"] for row in rows}


def trigger_stats_purge(*, keep: timedelta = timedelta(days=30)) -> int:
    """Forget counts older than ``keep`` (with the idempotency key purge, every minute)."""
    return TriggerStat.objects.filter(minute__lt=timezone.now() - keep).delete()[0]


def _minute(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)
