import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import ShowFacets
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import DatabaseError, transaction
from django.db.models import Count
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import slugify

from iolinker.admin_utils import ADMIN_MEDIA, pretty_json, status_badge
from workflows import lifecycle
from workflows.credentials import credential_set_secret
from workflows.definition import (
    CodeStepRefused,
    DefinitionError,
    code_step_guard,
    definition_from_workflow,
    sequence_errors,
    workflow_clone,
    workflow_export,
    workflow_import,
    workflow_version_save,
)
from workflows.errors import WorkflowsError
from workflows.graph import definition_svg
from workflows.ids import uid_at
from workflows.models import (
    SPEC_OPTIONS,
    Credential,
    EnvironmentVariable,
    Execution,
    Step,
    Workflow,
    WorkflowVersion,
)
from workflows.selectors import runs_by_parent
from workflows.services import workflow_run

# What a run, re-run or cancel button may meet besides success: a refusal of the
# domain (workflows/errors.py: disabled, already ended, queue or uid unavailable)
# or the database down. The admin says so; it never answers a 500 page.
REFUSALS = (WorkflowsError, DatabaseError)


def refusal_message(exc: Exception) -> str:
    if isinstance(exc, WorkflowsError):
        return str(exc) or "Service temporarily unavailable, try again later"
    return "The database is unavailable, try again later"


class StepFormSet(BaseInlineFormSet):
    """Checks what one step's form cannot: keys unique, jumps forward to a step,
    and code steps only from users who may edit them."""

    # Set per request by StepInline.get_formset: whose permissions apply.
    user = None

    def clean(self):
        super().clean()
        rows = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or not data.get("key") or not data.get("type"):
                continue
            spec = {"key": data["key"], "type": data["type"], "config": data.get("config") or {}}
            spec.update({name: data.get(name) for name in SPEC_OPTIONS})
            rows.append((data.get("position") or 0, spec))
        rows.sort(key=lambda row: row[0])
        before = definition_from_workflow(self.instance)["steps"] if self.instance.pk else []
        try:
            code_step_guard(steps=[spec for _, spec in rows], before=before, user=self.user)
        except CodeStepRefused as exc:
            raise ValidationError(str(exc)) from None
        problems = [
            p
            for p in sequence_errors([spec for _, spec in rows], where="steps")
            if "config/" not in p
        ]
        if problems:
            raise ValidationError(problems)


class StepInline(admin.StackedInline):
    model = Step
    formset = StepFormSet
    extra = 0
    fields = [
        ("position", "key", "type"),
        "config",
        ("next", "on_error", "error_next"),
        ("retries", "retry_interval", "retry_backoff", "timeout"),
    ]
    ordering = ["position", "id"]

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)  # a new class per request
        formset.user = request.user
        return formset


class VersionInline(admin.TabularInline):
    model = WorkflowVersion
    extra = 0
    fields = ["number", "created_at", "step_keys"]
    readonly_fields = fields
    ordering = ["-number"]
    max_num = 0
    can_delete = False
    verbose_name_plural = "versions (each save that changes the definition makes one)"

    @admin.display(description="Steps")
    def step_keys(self, obj):
        return " → ".join(step["key"] for step in obj.definition.get("steps", [])) or "—"

    def has_change_permission(self, request, obj=None):
        return False


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A JSON file written by Export (format iolinker.workflow).")
    name = forms.CharField(required=False, help_text="Import under this name instead.")
    replace = forms.BooleanField(
        required=False, help_text="Replace the workflow of that name (a new version of it)."
    )


class RunForm(forms.Form):
    input = forms.JSONField(
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80}),
        help_text="A JSON object: the run's body (as a POST to an API would give it).",
    )

    def clean_input(self):
        value = self.cleaned_data["input"]
        if not isinstance(value, dict):
            raise ValidationError("The input must be a JSON object.")
        return value


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "api_list",
        "step_count",
        "enabled",
        "last_run",
        "success_rate",
        "created_at",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    fieldsets = [
        (None, {"fields": ["name", "description", "enabled", "variables", "timeout_seconds"]}),
        ("Shape", {"fields": ["graph"]}),
    ]
    readonly_fields = ["graph"]
    inlines = [StepInline, VersionInline]
    actions = ["run_selected", "clone_selected", "export_selected"]
    change_list_template = "admin/workflows/workflow/change_list.html"
    media = ADMIN_MEDIA

    @admin.display(description="Graph (steps in order; hover a step for its config)")
    def graph(self, obj):
        if not obj.pk:
            return "Save the workflow to see its graph."
        return format_html(
            '<div class="iol-graph-box">{}</div>', definition_svg(definition_from_workflow(obj))
        )

    @admin.action(description="Run selected workflows with a JSON input", permissions=["operate"])
    def run_selected(self, request, queryset):
        form = RunForm(request.POST if "run_input" in request.POST else None)
        if form.is_bound and form.is_valid():
            for workflow in queryset:
                try:
                    execution = workflow_run(workflow=workflow, body=form.cleaned_data["input"])
                except REFUSALS as exc:
                    self.message_user(request, refusal_message(exc), messages.WARNING)
                    continue
                url = reverse("admin:workflows_execution_change", args=[execution.uid])
                self.message_user(
                    request,
                    format_html(
                        'Started {}: run <a href="{}">{}</a>.', workflow.name, url, execution.uid
                    ),
                    messages.SUCCESS,
                )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Run workflows",
            "form": form,
            "queryset": queryset,
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/workflows/workflow/run.html", context)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        version = workflow_version_save(workflow=form.instance)
        self.message_user(request, f"Current version: {version.number}.", messages.INFO)

    def has_operate_permission(self, request):
        """Run, re-run and cancel: for who may change workflows, not for viewers."""
        return request.user.has_perm("workflows.change_workflow")

    @admin.action(description="Clone selected workflows", permissions=["add"])
    def clone_selected(self, request, queryset):
        cloned = []
        try:
            with transaction.atomic():  # all or none
                for workflow in queryset:
                    name = f"{workflow.name} (copy)"
                    number = 2
                    while Workflow.objects.filter(name=name).exists():
                        name, number = f"{workflow.name} (copy {number})", number + 1
                    workflow_clone(workflow=workflow, name=name, user=request.user)
                    cloned.append((workflow.name, name))
        except CodeStepRefused as exc:
            self.message_user(
                request, f"Nothing cloned: cloning copies code steps. {exc}", messages.ERROR
            )
            return
        for original, name in cloned:
            self.message_user(request, f"Cloned {original!r} as {name!r}.", messages.SUCCESS)

    @admin.action(description="Export selected workflows (JSON)")
    def export_selected(self, request, queryset):
        documents = [workflow_export(workflow=w) for w in queryset]
        body = documents[0] if len(documents) == 1 else documents
        filename = slugify(documents[0]["name"]) if len(documents) == 1 else "workflows"
        response = HttpResponse(
            json.dumps(body, indent=2, ensure_ascii=False), content_type="application/json"
        )
        response["Content-Disposition"] = f'attachment; filename="{filename}.json"'
        return response

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="workflows_workflow_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request):
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:workflows_workflow_changelist"))
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                document = json.loads(form.cleaned_data["file"].read())
                documents = document if isinstance(document, list) else [document]
                with transaction.atomic():  # all or none
                    imported = [
                        workflow_import(
                            document=doc,
                            name=form.cleaned_data["name"] or None,
                            replace=form.cleaned_data["replace"],
                            user=request.user,
                        )
                        for doc in documents
                    ]
                for workflow in imported:
                    self.message_user(request, f"Imported {workflow.name!r}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:workflows_workflow_changelist"))
            except (ValueError, DefinitionError) as exc:
                form.add_error("file", str(exc))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import workflows",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/workflows/workflow/import.html", context)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_steps=Count("steps", distinct=True))

    @admin.display(description="Steps", ordering="_steps")
    def step_count(self, obj):
        return obj._steps

    @admin.display(description="Triggered by")
    def api_list(self, obj):
        return ", ".join(str(api) for api in obj.apis.all()) or "—"

    @admin.display(description="Last run")
    def last_run(self, obj):
        stats = getattr(obj, "run_stats", {})
        if not stats.get("last_uid"):
            return "—"
        url = reverse("admin:workflows_execution_change", args=[stats["last_uid"]])
        return format_html('<a href="{}">{}</a>', url, status_badge(stats["last_status"]))

    @admin.display(description="Success (24 h)")
    def success_rate(self, obj):
        stats = getattr(obj, "run_stats", {})
        finished = stats.get("succeeded", 0) + stats.get("failures", 0)
        if not finished:
            return "—"
        rate = 100 * stats["succeeded"] / finished
        return format_html(
            '<span class="{}" title="{} of {} finished runs in the last 24 h">{}%</span>',
            "iol-bad" if rate < 90 else "",
            stats["succeeded"],
            finished,
            f"{rate:.0f}",
        )

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        changelist.result_list = changelist.result_list.prefetch_related("apis")
        workflows = list(changelist.result_list)
        since = timezone.now() - timedelta(hours=24)
        stats = runs_by_parent(field="workflow", ids=[w.pk for w in workflows], since=since)
        for workflow in workflows:
            workflow.run_stats = stats.get(workflow.pk, {})
        return changelist


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LimitedCountPaginator(Paginator):
    """Counts at most LIMIT rows: a COUNT over a million runs reads them all, a
    bounded one stops early. Past the limit the list says "more than" and pages
    stop there (filter or search to narrow it)."""

    LIMIT = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.LIMIT + 1].count()

    @property
    def is_limited(self) -> bool:
        return self.count > self.LIMIT


class TimeRangeFilter(admin.SimpleListFilter):
    """Runs created in the last hour, day, ...: a range of uids (they are
    time-ordered), so the primary key serves it, not a created_at index."""

    title = "created"
    parameter_name = "since"
    RANGES = {
        "15m": ("Last 15 minutes", timedelta(minutes=15)),
        "1h": ("Last hour", timedelta(hours=1)),
        "24h": ("Last 24 hours", timedelta(hours=24)),
        "7d": ("Last 7 days", timedelta(days=7)),
        "30d": ("Last 30 days", timedelta(days=30)),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _) in self.RANGES.items()]

    def queryset(self, request, queryset):
        entry = self.RANGES.get(self.value() or "")
        if entry is None:
            return queryset
        return queryset.filter(uid__gte=uid_at(timezone.now() - entry[1]))


# Inlines other apps show on the execution page (triggers adds its completion
# callback; workflows never imports triggers). Filled at admin autodiscovery.
EXECUTION_INLINES: list[type[admin.options.InlineModelAdmin]] = []


def execution_inline_register(inline: type[admin.options.InlineModelAdmin]) -> None:
    """Show ``inline`` on every execution's admin page."""
    if inline not in EXECUTION_INLINES:
        EXECUTION_INLINES.append(inline)


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "uid_text",
        "workflow",
        "api",
        "status_badge",
        "created_at",
        "duration_text",
    ]
    list_filter = ["status", TimeRangeFilter, "workflow", "api"]
    list_select_related = ["workflow", "api"]
    actions = ["cancel_selected", "rerun_selected"]
    search_fields = ["=uid"]  # (shows the search box; get_search_results does the lookup)
    search_help_text = "Exact execution uid"
    # A million runs: no full COUNT (neither of the whole table nor per filter
    # choice), a bounded one for the pages, sorting only by uid (= creation time;
    # the primary key), filters on indexed columns (workflows/models.py).
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    paginator = LimitedCountPaginator
    sortable_by = ["uid_text"]

    def get_search_results(self, request, queryset, search_term):
        """An exact uid through the primary key. Django's `=uid` compares
        UPPER(uid::text), a scan of the whole table (measured: 0.9 s on a
        million runs); anything that is not a uid finds nothing."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isascii() and term.isdigit() and len(term) <= 19 and int(term) < 2**63:
            return queryset.filter(uid=int(term)), False
        return queryset.none(), False

    inlines = EXECUTION_INLINES
    change_form_template = "admin/workflows/execution/change_form.html"
    media = ADMIN_MEDIA
    fieldsets = [
        (
            None,
            {
                "fields": [
                    ("uid_text", "status_badge", "attempts"),
                    ("workflow", "version_number", "api"),
                    ("parent", "rerun_of", "resume_at"),
                    ("created_at", "started_at", "finished_at", "duration_text"),
                    "error",
                ]
            },
        ),
        ("Trigger input", {"fields": ["input_json"]}),
        ("Steps", {"fields": ["timeline"]}),
        ("Output", {"fields": ["output_json"]}),
    ]
    readonly_fields = [
        "uid_text",
        "status_badge",
        "attempts",
        "workflow",
        "version_number",
        "api",
        "parent",
        "rerun_of",
        "resume_at",
        "created_at",
        "started_at",
        "finished_at",
        "duration_text",
        "error",
        "input_json",
        "timeline",
        "output_json",
    ]

    @admin.display(description="uid", ordering="uid")
    def uid_text(self, obj):
        return str(obj.uid)

    @admin.display(description="status")
    def status_badge(self, obj):
        return status_badge(obj.status)

    @admin.display(description="Version")
    def version_number(self, obj):
        return f"v{obj.version.number}" if obj.version else "—"

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Step runs")
    def timeline(self, obj):
        runs = list(obj.step_runs.order_by("started_at", "position", "id"))
        if not runs:
            return "No step has finished yet."
        start = min([run.started_at for run in runs] + [obj.started_at or runs[0].started_at])
        end = max([run.finished_at for run in runs] + [obj.finished_at or runs[-1].finished_at])
        span = max((end - start).total_seconds(), 0.001)
        rows = [
            {
                "run": run,
                "offset_ms": round((run.started_at - start).total_seconds() * 1000),
                "left": round(100 * (run.started_at - start).total_seconds() / span, 2),
                "width": round(100 * (run.finished_at - run.started_at).total_seconds() / span, 2),
                "input": pretty_json(run.input),
                "output": pretty_json(run.output),
                "badge": status_badge(run.status),
            }
            for run in runs
        ]
        return render_to_string("admin/workflows/execution/timeline.html", {"rows": rows})

    # --- Buttons on the run's page: the same services as the list actions ----

    def get_urls(self):
        return [
            path(
                "<int:uid>/rerun/",
                self.admin_site.admin_view(self.rerun_view),
                name="workflows_execution_rerun",
            ),
            path(
                "<int:uid>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="workflows_execution_cancel",
            ),
            *super().get_urls(),
        ]

    def has_operate_permission(self, request):
        """Re-run and cancel: for who may change workflows, not for who only views runs."""
        return request.user.has_perm("workflows.change_workflow")

    def _button_target(self, request, uid: int) -> Execution:
        execution = get_object_or_404(Execution, uid=uid)
        if not self.has_operate_permission(request):
            raise PermissionDenied
        return execution

    def rerun_view(self, request, uid: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        execution = self._button_target(request, uid)
        try:
            new = lifecycle.execution_rerun(uid=execution.uid)
        except REFUSALS as exc:
            self.message_user(request, f"{uid}: {refusal_message(exc)}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:workflows_execution_change", args=[uid]))
        self.message_user(request, f"{execution.uid} re-run as {new.uid}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:workflows_execution_change", args=[new.uid]))

    def cancel_view(self, request, uid: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        execution = self._button_target(request, uid)
        self._cancel(request, execution)
        return HttpResponseRedirect(reverse("admin:workflows_execution_change", args=[uid]))

    def _cancel(self, request, execution: Execution) -> None:
        try:
            lifecycle.execution_cancel(uid=execution.uid)
            self.message_user(request, f"Cancel requested for {execution.uid}.")
        except REFUSALS as exc:
            self.message_user(request, f"{execution.uid}: {refusal_message(exc)}", messages.WARNING)

    @admin.action(description="Cancel selected runs", permissions=["operate"])
    def cancel_selected(self, request, queryset):
        for execution in queryset:
            self._cancel(request, execution)

    @admin.action(description="Re-run selected runs with the same input", permissions=["operate"])
    def rerun_selected(self, request, queryset):
        for execution in queryset:
            try:
                new = lifecycle.execution_rerun(uid=execution.uid)
            except REFUSALS as exc:
                self.message_user(request, refusal_message(exc), messages.ERROR)
                continue
            self.message_user(request, f"{execution.uid} re-run as {new.uid}.", messages.SUCCESS)

    @admin.display(description="Duration")
    def duration_text(self, obj):
        return f"{obj.duration.total_seconds():.3f} s" if obj.duration else "—"

    @admin.display(description="Trigger input")
    def input_json(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="Output")
    def output_json(self, obj):
        return pretty_json(obj.output)


@admin.register(EnvironmentVariable)
class EnvironmentVariableAdmin(admin.ModelAdmin):
    list_display = ["name", "value_text", "description", "updated_at"]
    search_fields = ["name", "description"]

    @admin.display(description="Value")
    def value_text(self, obj):
        text = json.dumps(obj.value, ensure_ascii=False)
        return text if len(text) <= 80 else text[:77] + "..."


class CredentialForm(forms.ModelForm):
    base_url = forms.URLField(
        assume_scheme="https",
        help_text="e.g. https://api.openai.com/v1 (POSTs go to BASE/chat/completions)",
    )
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="The API key. Write-only: stored encrypted, never shown again; "
        "leave empty to keep the current one.",
    )

    class Meta:
        model = Credential
        fields = ["name", "kind", "base_url", "model"]


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialForm
    list_display = ["name", "kind", "base_url", "model", "has_secret", "updated_at"]
    fields = ["name", "kind", "base_url", "model", "secret"]

    @admin.display(description="Key set", boolean=True)
    def has_secret(self, obj):
        return bool(obj.secret_encrypted)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if form.cleaned_data.get("secret"):
            credential_set_secret(credential=obj, secret=form.cleaned_data["secret"])
