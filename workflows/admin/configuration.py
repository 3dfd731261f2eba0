"""Global configuration in the admin: environment variables (env.<name> in
expressions) and outbound credentials (secrets encrypted, never shown)."""

import json

from django import forms
from django.contrib import admin

from workflows.credentials import credential_set_secret
from workflows.models import (
    Credential,
    EnvironmentVariable,
)


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
