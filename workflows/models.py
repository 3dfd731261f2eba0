from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from workflows import steps

key_validator = RegexValidator(
    r"^[a-z_][a-z0-9_]{0,63}$",
    "Lowercase letters, digits and underscores, starting with a letter or underscore "
    "(it is used in expressions as steps.<key>).",
)


class Workflow(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(
        default=True, help_text="A disabled workflow refuses new triggers; accepted runs still run."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def _step_type_choices():
    return steps.choices()


class Step(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=0, help_text="Steps run in ascending order.")
    key = models.CharField(
        max_length=64,
        validators=[key_validator],
        help_text="Name of this step's output in later expressions: steps.<key>.",
    )
    type = models.CharField(max_length=32, choices=_step_type_choices)
    config = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="step_key_unique_per_workflow")
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.key} ({self.type})"

    def clean(self) -> None:
        super().clean()
        step_type = steps.REGISTRY.get(self.type)
        if step_type is None:
            return  # the `type` field's own choices validation reports it
        errors = step_type.validate(self.config)
        if errors:
            raise ValidationError({"config": errors})


class ExecutionStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINAL_STATUSES = {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED}


class Execution(models.Model):
    """One run of a workflow: the source of truth, not django-q2's task table."""

    uid = models.BigIntegerField(
        primary_key=True, editable=False
    )  # snowflake, see workflows/ids.py
    api = models.ForeignKey(
        "triggers.ApiDefinition",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="executions",
    )
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="executions")
    status = models.CharField(
        max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.QUEUED
    )
    input = models.JSONField(default=dict)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    # Last time a queue message was sent for it (see execution_recover_stale).
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-uid"]  # uids are time-ordered: newest first without a created_at index
        indexes = [
            # Sweepers and dashboards: "runs in status X, oldest first".
            models.Index(fields=["status", "uid"], name="execution_status_uid"),
        ]

    def __str__(self) -> str:
        return str(self.uid)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    def mark_succeeded(self, output) -> None:
        self.status = ExecutionStatus.SUCCEEDED
        self.output = output
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "output", "finished_at"])

    def mark_failed(self, error: str, output=None) -> None:
        self.status = ExecutionStatus.FAILED
        self.error = error
        self.output = output
        self.finished_at = timezone.now()
        self.save(update_fields=["status", "error", "output", "finished_at"])


class StepRunStatus(models.TextChoices):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class StepRun(models.Model):
    """What one step did in one execution (written when the step finishes)."""

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="step_runs")
    step = models.ForeignKey(Step, on_delete=models.SET_NULL, null=True, blank=True)
    # Copies of the step's identity, so the record survives edits of the workflow.
    position = models.PositiveIntegerField()
    key = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=StepRunStatus.choices)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    logs = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()

    class Meta:
        ordering = ["execution", "position", "id"]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class IdLease(models.Model):
    """A snowflake instance number held by one live process (see workflows/ids.py)."""

    instance = models.PositiveSmallIntegerField(primary_key=True)
    owner = models.CharField(max_length=200)
    renewed_at = models.DateTimeField()

    class Meta:
        verbose_name = "uid instance lease"

    def __str__(self) -> str:
        return f"{self.instance} ({self.owner})"
