"""The hot path's SQL, raw where the ORM cost too much CPU (measured in each
docstring): the INSERT of new queued runs (with django-q2's message in the same
statement on PostgreSQL), the INSERT of step runs, and server-side binding.
Statements that change a run's status live in workflows/services/transitions.py.
"""

import json

from django.db import connection, transaction
from django_q.models import OrmQ

from workflows.models import Execution, StepRun


def executions_insert(runs: list, *, message: tuple | None = None) -> None:
    """Write new queued runs in one INSERT, and with ``message`` (key, payload,
    lock) django-q2's queue row in the same statement.

    Each run's input goes as the text checked in its request (intake.new_run), on every
    database: what was checked is what is stored.

    On PostgreSQL: plain SQL with server-side parameters, in one round trip. The
    ORM's bulk_create (client-side binding, UNNEST arrays of quoted JSON text)
    cost about 4x the web process CPU per run (measured 105 vs 26 µs per row),
    and each round trip costs ~150 µs of CPU on our VMs (BEGIN and COMMIT are two).
    """
    ops = connection.ops
    table = ops.quote_name(Execution._meta.db_table)
    insert = (
        f"INSERT INTO {table} (uid, api_id, workflow_id, status, input, output, error, "  # noqa: S608
        "attempts, created_at, queued_at, started_at, finished_at) VALUES "
    )
    if connection.vendor != "postgresql":
        # One prepared statement for all (no limit on parameters), all or none
        # (no savepoint: as bulk_create did, within the caller's transaction).
        row = "(%s, %s, %s, 'queued', %s, NULL, '', 0, %s, %s, NULL, NULL)"
        rows = []
        for run in runs:
            at = ops.adapt_datetimefield_value(run.at)
            rows.append((run.uid, run.api_id, run.workflow_id, run.input, at, at))
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            cursor.executemany(insert + row, rows)
        return
    row = "(%s, %s, %s, 'queued', %s::jsonb, NULL, '', 0, %s, %s, NULL, NULL)"
    sql = insert + ", ".join([row] * len(runs))
    params = []
    for run in runs:
        params += (run.uid, run.api_id, run.workflow_id, run.input, run.at, run.at)
    if message is not None:
        # A data-modifying CTE always runs to completion, in the statement's
        # transaction: both rows are written, or neither.
        queue = connection.ops.quote_name(OrmQ._meta.db_table)
        sql = f"WITH runs AS ({sql}) INSERT INTO {queue} (key, payload, lock) VALUES (%s, %s, %s)"  # noqa: S608
        params += message
    execute_server_side(sql, params)


_STEP_RUN_COLUMNS = (
    "execution_id, step_id, position, key, path, type, status, attempts, input, output, "
    "error, logs, started_at, finished_at, duration_ms"
)


def step_runs_insert(step_runs: list[StepRun], *, as_they_finish: bool = False) -> None:
    """Write step records in one INSERT. On PostgreSQL plain SQL with server-side
    parameters, as for new runs (executions_insert): Django's bulk_create cost about
    four times the CPU.

    ``as_they_finish``: the records of a run's effectful steps, written one by
    one as the steps end, commit without waiting for the WAL flush
    (synchronous_commit off for that statement's own transaction). They are
    visible to every other session at once, so a worker that dies next loses
    nothing; only a crash of PostgreSQL itself within its WAL writer delay (~0.2
    to 0.6 s) could lose one, and that step would then run again. The flush wait
    was most of a short run's time (docs/performance.md)."""
    if not step_runs:
        return
    if connection.vendor != "postgresql":
        StepRun.objects.bulk_create(step_runs)
        return
    table = connection.ops.quote_name(StepRun._meta.db_table)
    row = (
        "(%s::bigint, NULL::bigint, %s::integer, %s::varchar, %s::varchar, %s::varchar, "
        "%s::varchar, %s::smallint, %s::jsonb, %s::jsonb, %s::text, %s::text, "
        "%s::timestamptz, %s::timestamptz, %s::integer)"
    )
    values = ", ".join([row] * len(step_runs))
    sql = f"INSERT INTO {table} ({_STEP_RUN_COLUMNS}) "  # noqa: S608
    if as_they_finish:
        sql += (
            f"SELECT * FROM (VALUES {values}) AS v "  # noqa: S608
            "WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL"
        )
    else:
        sql += f"VALUES {values}"
    params = []
    for r in step_runs:
        params += (
            r.execution_id,
            r.position,
            r.key,
            r.path,
            r.type,
            r.status,
            r.attempts,
            None if r.input is None else _json(r.input),
            None if r.output is None else _json(r.output),
            r.error,
            r.logs,
            r.started_at,
            r.finished_at,
            r.duration_ms,
        )
    execute_server_side(sql, params)


def execute_server_side(sql: str, params: list) -> None:
    """Run one statement with server-side parameter binding (PostgreSQL), through
    Django's cursor wrapper: Django's error classes, query logging
    (assertNumQueries) and execute wrappers still apply."""
    import psycopg

    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    wrap = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    with wrap(raw) as cursor:
        cursor.execute(sql, params)


def _json(value) -> str:
    # As JSONField stores it (json.dumps, no custom encoder).
    return json.dumps(value)
