"""The workflows app's tables: workflows and their steps, versions (immutable
definitions), runs (``Execution``) and step runs, environment variables and
credentials, with the indexes each list and transition uses."""

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from workflows import steps
from workflows.storedjson import StoredJSONField

key_validator = RegexValidator(
    r"^[a-z_][a-z0-9_]{0,63}$",
    "Lowercase letters, digits and underscores, starting with a letter or underscore "
    "(it is used in expressions as steps.KEY).",
)


class Workflow(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(
        default=True, help_text="A disabled workflow refuses new triggers; accepted runs still run."
    )
    variables = models.JSONField(
        default=dict,
        blank=True,
        help_text="Workflow variables (a JSON object), read in expressions as vars.NAME.",
    )
    timeout_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(30 * 24 * 3600)],
        help_text="Overall time limit of a run, counted from its start (waits included); "
        "a run past it ends timed_out. Empty: no limit beyond each step's own.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class OnError(models.TextChoices):
    FAIL = "fail", "Fail the run"
    CONTINUE = "continue", "Continue with the error as output"
    BRANCH = "branch", "Go to the error step"


def _step_type_choices():
    return steps.choices()


class Step(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=0, help_text="Steps run in ascending order.")
    key = models.CharField(
        max_length=64,
        validators=[key_validator],
        help_text="Name of this step's output in later expressions: steps.KEY.",
    )
    type = models.CharField(max_length=32, choices=_step_type_choices)
    config = models.JSONField(default=dict, blank=True)
    next = models.CharField(
        max_length=64,
        blank=True,
        help_text="Go on with this later step after this one (or 'end' to end the run); "
        "empty: the following step.",
    )
    retries = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(10)],
        help_text="Attempts after a failure before the on-error policy applies.",
    )
    retry_interval = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0), MaxValueValidator(300)],
        help_text="Seconds before the first retry.",
    )
    retry_backoff = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(1), MaxValueValidator(10)],
        help_text="Each further retry waits this many times longer.",
    )
    timeout = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001), MaxValueValidator(3600)],
        help_text="Seconds one attempt of this step may take (code, http, llm, sub-workflow).",
    )
    on_error = models.CharField(
        max_length=16,
        choices=OnError.choices,
        default=OnError.FAIL,
        help_text="When the step still fails: fail the run, continue with the error as its "
        "output, or go to the error step.",
    )
    error_next = models.CharField(
        max_length=64, blank=True, help_text="The later step to go to when on error is 'branch'."
    )

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="step_key_unique_per_workflow")
        ]
        permissions = [
            # A code step runs Python on the workers: editing one is more than
            # editing a workflow (workflows/admin/workflow.py, StepFormSet).
            ("change_code_step", "Can add or change code steps"),
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
        if self.on_error == OnError.BRANCH and not self.error_next:
            raise ValidationError({"error_next": "Name the step to go to on error."})

    def as_spec(self) -> dict:
        """This step in the definition format (workflows/definition.py)."""
        spec = {"key": self.key, "type": self.type, "config": self.config}
        defaults = {f.name: f.default for f in self._meta.fields if f.name in SPEC_OPTIONS}
        for name in SPEC_OPTIONS:
            value = getattr(self, name)
            if value != defaults[name] and value not in ("", None):
                spec[name] = value
        return spec


# Step fields besides key/type/config, as named in the definition format.
SPEC_OPTIONS = (
    "next",
    "retries",
    "retry_interval",
    "retry_backoff",
    "timeout",
    "on_error",
    "error_next",
)


class WorkflowVersion(models.Model):
    """An immutable snapshot of a workflow's definition, made by every save that
    changes it. An execution pins the version it ran (workflows/definition.py)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="workflow_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} v{self.number}"


class EnvironmentVariable(models.Model):
    """A global value every expression can read as env.<name>."""

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(
                r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", "A letter or _, then letters, digits, _"
            )
        ],
    )
    value = models.JSONField(help_text="Any JSON value (a string needs quotes).")
    description = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "environment variable"

    def __str__(self) -> str:
        return self.name


class CredentialKind(models.TextChoices):
    OPENAI = "openai", "OpenAI-compatible chat completions"


class Credential(models.Model):
    """An outbound credential steps use by name (the llm step). The secret must be
    sent, so it cannot be hashed: it is encrypted with a key derived from
    SECRET_KEY (workflows/credentials.py) and never shown again or recorded."""

    name = models.CharField(max_length=64, unique=True, validators=[key_validator])
    kind = models.CharField(max_length=16, choices=CredentialKind.choices)
    base_url = models.URLField(
        help_text="e.g. https://api.openai.com/v1 (the step POSTs to BASE/chat/completions)"
    )
    model = models.CharField(max_length=100, blank=True, help_text="Default model name.")
    secret_encrypted = models.TextField(blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ExecutionStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # a long delay step: resumes at resume_at
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


FINAL_STATUSES = {
    ExecutionStatus.SUCCEEDED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELLED,
    ExecutionStatus.TIMED_OUT,
}


class Execution(models.Model):
    """One run of a workflow: the source of truth, not django-q2's task table."""

    uid = models.BigIntegerField(
        primary_key=True, editable=False
    )  # snowflake, see workflows/ids.py
    # No single-column indexes on api and workflow: the (api, uid, status) and
    # (workflow, uid, status) indexes below serve their lookups too.
    api = models.ForeignKey(
        "triggers.ApiDefinition",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="executions",
        db_index=False,
        verbose_name="API",
    )
    workflow = models.ForeignKey(
        Workflow, on_delete=models.PROTECT, related_name="executions", db_index=False
    )
    # Pinned when the run is first claimed: the definition it runs, whatever edits follow.
    version = models.ForeignKey(
        WorkflowVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    parent = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children"
    )
    # The new columns have database defaults: the trigger path's INSERT leaves them out.
    parent_step = models.CharField(
        max_length=300, blank=True, default="", db_default=""
    )  # path of the sub-workflow step
    rerun_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reruns"
    )
    status = models.CharField(
        max_length=16, choices=ExecutionStatus.choices, default=ExecutionStatus.QUEUED
    )
    input = StoredJSONField(default=dict)
    output = StoredJSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    # Last time a queue message was sent for it (see workflows/lifecycle.py).
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A running run's worker renews this while it runs; past it, the reaper takes the
    # run back (workflows/lifecycle.py execution_recover_stale).
    lease_until = models.DateTimeField(null=True, blank=True)
    resume_at = models.DateTimeField(null=True, blank=True)  # when a waiting run goes on
    cancel_requested = models.BooleanField(default=False, db_default=False)
    recoveries = models.PositiveSmallIntegerField(
        default=0,
        db_default=0,
        help_text="Times the reaper took this run back from a worker that stopped.",
    )

    class Meta:
        ordering = ["-uid"]  # uids are time-ordered: newest first without a created_at index
        indexes = [
            # Sweepers and dashboards: "runs in status X, oldest first".
            models.Index(fields=["status", "uid"], name="execution_status_uid"),
            # The admin's API filter (newest first), the API list's last call and its
            # calls and failures of the last 24 h (a uid range: uids are time-ordered;
            # status in the index, so PostgreSQL counts from the index alone), the
            # SET NULL of a deleted API.
            models.Index(fields=["api", "uid", "status"], name="execution_api_uid"),
            # The same for workflows: the admin's workflow filter, the Workflow List's
            # last run status and success rate, the PROTECT check of a deletion.
            models.Index(fields=["workflow", "uid", "status"], name="execution_workflow_uid"),
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
    # Where in the run: the key, inside loops "loop[2].key" (the identity used to
    # resume a run without repeating steps that finished).
    path = models.CharField(max_length=300, blank=True)
    type = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=StepRunStatus.choices)
    attempts = models.PositiveSmallIntegerField(default=1)
    input = StoredJSONField(null=True, blank=True)
    output = StoredJSONField(null=True, blank=True)
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
