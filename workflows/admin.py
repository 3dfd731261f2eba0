from django.contrib import admin
from django.db.models import Count

from iolinker.admin_utils import pretty_json
from triggers.admin import CallbackDeliveryInline
from workflows.models import Execution, Step, StepRun, Workflow


class StepInline(admin.StackedInline):
    model = Step
    extra = 0
    fields = [("position", "key", "type"), "config"]
    ordering = ["position", "id"]


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ["name", "enabled", "step_count", "api_list", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    inlines = [StepInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_steps=Count("steps", distinct=True))

    @admin.display(description="Steps", ordering="_steps")
    def step_count(self, obj):
        return obj._steps

    @admin.display(description="Triggered by")
    def api_list(self, obj):
        return ", ".join(str(api) for api in obj.apis.all()) or "—"

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        changelist.result_list = changelist.result_list.prefetch_related("apis")
        return changelist


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class StepRunInline(ReadOnlyMixin, admin.StackedInline):
    model = StepRun
    extra = 0
    fields = [
        ("position", "key", "type", "status", "duration_ms"),
        "error",
        "input_json",
        "output_json",
        "logs",
    ]
    readonly_fields = fields[0] + ("error", "input_json", "output_json", "logs")
    ordering = ["position", "id"]

    @admin.display(description="Input")
    def input_json(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="Output")
    def output_json(self, obj):
        return pretty_json(obj.output)


@admin.register(Execution)
class ExecutionAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["uid_text", "workflow", "api", "status", "created_at", "duration_text"]
    list_filter = ["status", "workflow"]
    list_select_related = ["workflow", "api"]
    search_fields = ["=uid"]
    search_help_text = "Exact execution uid"
    show_full_result_count = False
    inlines = [StepRunInline, CallbackDeliveryInline]
    fields = [
        ("uid_text", "status", "attempts"),
        ("workflow", "api"),
        ("created_at", "started_at", "finished_at", "duration_text"),
        "error",
        "input_json",
        "output_json",
    ]
    readonly_fields = [
        "uid_text",
        "status",
        "attempts",
        "workflow",
        "api",
        "created_at",
        "started_at",
        "finished_at",
        "duration_text",
        "error",
        "input_json",
        "output_json",
    ]

    @admin.display(description="uid", ordering="uid")
    def uid_text(self, obj):
        return str(obj.uid)

    @admin.display(description="Duration")
    def duration_text(self, obj):
        return f"{obj.duration.total_seconds():.3f} s" if obj.duration else "—"

    @admin.display(description="Trigger input")
    def input_json(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="Output")
    def output_json(self, obj):
        return pretty_json(obj.output)
