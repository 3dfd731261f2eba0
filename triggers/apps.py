"""The triggers app's configuration; at start it registers its finish hook
(completion callbacks) into workflows and clears the API cache on changes."""

from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "APIs"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from triggers.callbacks import callbacks_schedule
        from triggers.models import ApiDefinition
        from triggers.services import api_cache_clear
        from workflows.hooks import finish_hook_register
        from workflows.models import Workflow

        # Runs that end promise their completion callbacks in the same transaction.
        finish_hook_register(name="triggers.callbacks", hook=callbacks_schedule)

        # Cached API definitions (triggers/services/apis.py) must not outlive a change.
        for model in (ApiDefinition, Workflow):
            post_save.connect(api_cache_clear, sender=model, dispatch_uid=f"api-cache-{model}")
            post_delete.connect(api_cache_clear, sender=model, dispatch_uid=f"api-del-{model}")
