"""The workflows app's services, one module per role (house style: views, admin
actions, commands and tasks all call these):

* ``definitions``: create a workflow, run one by hand;
* ``intake``: queue a run (``execution_queue``, ``execution_queue_one``);
* ``queueing``: the per-process broker, pushing messages, ``write_then_push``;
* ``sql``: the hot path's raw INSERTs;
* ``transitions``: the run's status machine (every status change is there);
* ``worker``: the claim loop of a run task;
* ``running``: running one claimed execution and saving a chunk's outcomes;
* ``children``: sub-workflow child runs.

Acting on accepted runs (cancel, re-run, resume, the reaper) is
workflows/lifecycle.py; a worker's watch over its runs is workflows/watch.py.
"""

from workflows.errors import WorkflowDisabled
from workflows.services.definitions import workflow_create, workflow_run
from workflows.services.intake import execution_queue, execution_queue_one
from workflows.services.worker import (
    execution_run,
    execution_run_batch,
    execution_worker_may_steal,
)

__all__ = [
    "WorkflowDisabled",
    "execution_queue",
    "execution_queue_one",
    "execution_run",
    "execution_run_batch",
    "execution_worker_may_steal",
    "workflow_create",
    "workflow_run",
]
