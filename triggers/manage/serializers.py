"""The JSON shape of the management API's resources (camelCase, as the rest of
the public API): an API, a workflow's summary, a run's summary. Secrets are
write-only (``password``) or never shown (token and callback-secret digests);
new ones are answered once by the views. Validation here is the model's own
(field validators, unique module/method) plus the admin form's one rule about
password authentication; saving is the views' (through the services).
"""

from rest_framework import serializers

from triggers.models import ApiDefinition, AuthMode
from workflows.models import Execution, Workflow


class _Stamped(serializers.ModelSerializer):
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)


class ApiSerializer(_Stamped):
    httpMethod = serializers.ChoiceField(
        source="http_method",
        choices=ApiDefinition._meta.get_field("http_method").choices,
        default="POST",
    )
    workflow = serializers.PrimaryKeyRelatedField(queryset=Workflow.objects.all())
    workflowName = serializers.CharField(source="workflow.name", read_only=True)
    authMode = serializers.ChoiceField(
        source="auth_mode", choices=AuthMode.choices, default=AuthMode.TOKEN
    )
    authUser = serializers.CharField(
        source="auth_user", max_length=150, required=False, allow_blank=True
    )
    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="For user + password authentication; stored hashed, never shown.",
    )
    hasSecret = serializers.BooleanField(source="has_secret", read_only=True)
    # The model's validators (DRF would swap its URLValidator for one taking any scheme).
    callbackUrl = serializers.CharField(
        source="callback_url",
        max_length=500,
        required=False,
        allow_blank=True,
        validators=ApiDefinition._meta.get_field("callback_url").validators,
    )
    hasCallbackSecret = serializers.SerializerMethodField()
    url = serializers.CharField(read_only=True)

    class Meta:
        model = ApiDefinition
        fields = [
            "id",
            "module",
            "method",
            "httpMethod",
            "workflow",
            "workflowName",
            "enabled",
            "authMode",
            "authUser",
            "password",
            "hasSecret",
            "syncEnabled",
            "syncTimeout",
            "callbackUrl",
            "hasCallbackSecret",
            "ipAllowlist",
            "rateLimit",
            "rateLimitPeriod",
            "debugPayload",
            "publishExample",
            "description",
            "url",
            "createdAt",
            "updatedAt",
        ]
        # Model fields under their JSON names (DRF keeps each model field's validators).
        extra_kwargs = {
            "syncEnabled": {"source": "sync_enabled"},
            "syncTimeout": {"source": "sync_timeout"},
            "ipAllowlist": {"source": "ip_allowlist"},
            "rateLimit": {"source": "rate_limit"},
            "rateLimitPeriod": {"source": "rate_limit_period"},
            "debugPayload": {"source": "debug_payload"},
            "publishExample": {"source": "publish_example"},
        }

    def get_hasCallbackSecret(self, api: ApiDefinition) -> bool:
        return bool(api.callback_secret)

    def validate(self, data: dict) -> dict:
        """The admin form's rule (triggers/admin.py, ApiDefinitionForm.clean):
        user + password authentication needs a user and a password."""
        instance = self.instance
        mode = data.get("auth_mode", instance.auth_mode if instance else None)
        if mode == AuthMode.PASSWORD:
            user = data.get("auth_user", instance.auth_user if instance else "")
            if not user:
                raise serializers.ValidationError(
                    {"authUser": "User + password authentication needs a user."}
                )
            if not data.get("password") and not (instance and instance.password_hash):
                raise serializers.ValidationError(
                    {"password": "Set a password for user + password authentication."}
                )
        return data


class WorkflowSerializer(_Stamped):
    """A workflow's summary; its definition is what ``export`` answers."""

    timeoutSeconds = serializers.IntegerField(source="timeout_seconds", read_only=True)
    stepCount = serializers.IntegerField(source="step_count", read_only=True)
    version = serializers.IntegerField(source="version_number", read_only=True, allow_null=True)

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "description",
            "enabled",
            "timeoutSeconds",
            "stepCount",
            "version",
            "createdAt",
            "updatedAt",
        ]
        read_only_fields = fields


class ExecutionSerializer(serializers.ModelSerializer):
    """A run's summary (its detail, with input, output and step runs, is
    ``workflows.selectors.execution_detail``, as ``show_execution`` prints it)."""

    uid = serializers.CharField(read_only=True)  # 63-bit: a string, never a JS number
    workflowId = serializers.IntegerField(source="workflow_id", read_only=True)
    workflow = serializers.CharField(source="workflow.name", read_only=True)
    apiId = serializers.IntegerField(source="api_id", read_only=True, allow_null=True)
    api = serializers.SerializerMethodField()
    parent = serializers.SerializerMethodField()
    rerunOf = serializers.SerializerMethodField()
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    startedAt = serializers.DateTimeField(source="started_at", read_only=True)
    finishedAt = serializers.DateTimeField(source="finished_at", read_only=True)

    class Meta:
        model = Execution
        fields = [
            "uid",
            "status",
            "workflowId",
            "workflow",
            "apiId",
            "api",
            "attempts",
            "parent",
            "rerunOf",
            "createdAt",
            "startedAt",
            "finishedAt",
        ]
        read_only_fields = fields

    def get_api(self, execution: Execution) -> str | None:
        return str(execution.api) if execution.api_id else None

    def get_parent(self, execution: Execution) -> str | None:
        return str(execution.parent_id) if execution.parent_id else None

    def get_rerunOf(self, execution: Execution) -> str | None:
        return str(execution.rerun_of_id) if execution.rerun_of_id else None
