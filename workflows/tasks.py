"""django-q2 task entry points: take an id, let the service re-fetch the row."""

from workflows.services import execution_run


def run_execution(uid: int) -> None:
    execution_run(uid=uid)
