"""The workflow admin: steps edited inline (code steps only for users who may
add them: workflows.definition.code_step_guard), versions, the graph, run with a
JSON input, clone, export and import."""

import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import slugify

from iolinker.admin_utils import ADMIN_MEDIA, status_badge
from workflows.admin.common import REFUSALS, OperateMixin, refusal_message
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
from workflows.graph import definition_svg
from workflows.models import (
    SPEC_OPTIONS,
    Step,
    Workflow,
    WorkflowVersion,
)
from workflows.selectors import runs_by_parent
from workflows.services import workflow_run


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
class WorkflowAdmin(OperateMixin, admin.ModelAdmin):
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
