"""Sub-workflow children: how a subworkflow step starts its child run, either
queued on its own (``wait: false``) or run in place in its parent's worker,
sharing the parent's cancel flag and time limit (engine.Runner.run_child). A
child its parent resumed goes on from its last finished step.
"""

from django.conf import settings
from django.utils import timezone

from workflows import engine, ids
from workflows.models import Execution, ExecutionStatus, StepRun, Workflow
from workflows.services import intake, running, transitions
from workflows.steps import StepError


def _ancestors(execution: Execution) -> int:
    """How many parent runs above this one (stops counting past the depth limit)."""
    count, parent_id = 0, execution.parent_id
    while parent_id is not None and count <= settings.IOLINKER_SUBWORKFLOW_DEPTH:
        count += 1
        parent_id = (
            Execution.objects.filter(uid=parent_id).values_list("parent_id", flat=True).first()
        )
    return count


class ChildRuns:
    """How a subworkflow step runs its child (engine.Runner.run_child)."""

    def __init__(self, depth: int, cancelled):
        self.depth = depth
        self.cancelled = cancelled

    def __call__(self, *, parent, workflow, body, wait, path, control, timeout):
        child_workflow = Workflow.objects.filter(name=workflow).first()
        if child_workflow is None:
            raise StepError(f"no workflow named {workflow!r}")
        if not child_workflow.enabled:
            raise StepError(f"workflow {workflow!r} is disabled")
        trigger_input = {"method": "SUBWORKFLOW", "body": body, "query": {}, "headers": {}}
        if not wait and _ancestors(parent) >= settings.IOLINKER_SUBWORKFLOW_DEPTH:
            raise StepError(
                f"sub-workflows nest deeper than {settings.IOLINKER_SUBWORKFLOW_DEPTH} levels"
            )
        if not wait:
            child = intake.execution_queue_one(
                Execution(workflow=child_workflow, parent=parent, input=trigger_input)
            )
            return {"uid": str(child.uid)}
        if self.depth > settings.IOLINKER_SUBWORKFLOW_DEPTH:
            raise StepError(
                f"sub-workflows nest deeper than {settings.IOLINKER_SUBWORKFLOW_DEPTH} levels"
            )
        child = self._child(parent, child_workflow, path, trigger_input)
        resume_at = None
        if not child.is_final:
            step_runs: list[StepRun] = []
            if timeout is not None and (control.deadline is None or timeout < control.deadline):
                # The subworkflow step's own time limit bounds its child too.
                control = engine.Control(
                    cancelled=control.cancelled,
                    deadline=timeout,
                    timeout_seconds=control.timeout_seconds,
                )
            running.run_one(child, step_runs, depth=self.depth, control=control)
            # A waiting child is resumed by its parent, never on its own schedule.
            resume_at, child.resume_at = child.resume_at, None
            running.chunk_save([child], step_runs)
        if child.status == ExecutionStatus.WAITING:
            # The child waits for a delay: so does its parent, which resumes it.
            raise engine.waiting_until(resume_at or timezone.now())
        if child.status != ExecutionStatus.SUCCEEDED:
            raise StepError(
                f"sub-workflow {workflow!r} ({child.uid}) ended {child.status}: {child.error}",
                output={"uid": str(child.uid), "status": child.status, "error": child.error},
            )
        return child.output

    def _child(self, parent, child_workflow, path, trigger_input) -> Execution:
        """The child run of this step: the one an earlier attempt of the parent
        made if it is unfinished (resumed: it replays its finished steps) or
        succeeded; else a new one (a retry of the step runs the child again)."""
        child = Execution.objects.filter(parent=parent, parent_step=path).order_by("-uid").first()
        if child is not None and child.is_final and child.status != ExecutionStatus.SUCCEEDED:
            child = None
        now = timezone.now()
        if child is None:
            child = Execution(
                uid=ids.next_uid(),
                workflow=child_workflow,
                parent=parent,
                parent_step=path,
                input=trigger_input,
                status=ExecutionStatus.RUNNING,
                created_at=now,
                queued_at=now,
                started_at=now,
                attempts=1,
            )
            child.save(force_insert=True)
        elif not child.is_final:
            transitions.execution_child_continue(child)
        if child.version_id is None:
            running.run_definition(child)
        return child
