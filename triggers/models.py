"""The triggers app's tables: API definitions (secrets hashed), idempotency keys,
completion callback deliveries and attempts, and refusal counters."""

import ipaddress
import re
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
    RegexValidator,
    URLValidator,
)
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
    "Letters, digits, '-' and '_' (up to 64, starting with a letter or digit): "
    "it is a segment of the API's URL.",
)


def ip_networks_parse(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """IP networks (CIDRs, or bare addresses) separated by commas, spaces or lines."""
    return [ipaddress.ip_network(item, strict=False) for item in text.replace(",", " ").split()]


def validate_ip_networks(text: str) -> None:
    for item in text.replace(",", " ").split():
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValidationError(
                "%(item)s is not an IP address or network (e.g. 203.0.113.0/24, 2001:db8::/32).",
                params={"item": item},
            ) from None


class RatePeriod(models.TextChoices):
    SECOND = "second", "per second"
    MINUTE = "minute", "per minute"
    HOUR = "hour", "per hour"


class HttpMethod(models.TextChoices):
    GET = "GET"
    POST = "POST"


class AuthMode(models.TextChoices):
    NONE = "none", "None"
    TOKEN = "token", "Token (header `token`)"
    PASSWORD = "password", "User + password (headers `user`, `password`)"


class ApiDefinition(models.Model):
    """An HTTP API that triggers a workflow: /v1/api/<module>/<method>/async."""

    module = models.CharField(
        max_length=64, validators=[name_validator], help_text="Groups APIs, e.g. by product."
    )
    method = models.CharField(
        "method name",
        max_length=64,
        validators=[name_validator],
        help_text="The API's name within its module.",
    )
    http_method = models.CharField(
        "HTTP verb", max_length=8, choices=HttpMethod.choices, default=HttpMethod.POST
    )
    auth_mode = models.CharField(
        "authentication", max_length=16, choices=AuthMode.choices, default=AuthMode.TOKEN
    )
    # Secrets are stored hashed only (see triggers/services/apis.py).
    token_hash = models.CharField(max_length=128, blank=True, editable=False)
    auth_user = models.CharField("user", max_length=150, blank=True)
    password_hash = models.CharField(max_length=256, blank=True, editable=False)
    workflow = models.ForeignKey(
        "workflows.Workflow", on_delete=models.PROTECT, related_name="apis"
    )
    enabled = models.BooleanField(default=True, help_text="A disabled API refuses every call.")
    sync_enabled = models.BooleanField(
        "answers /sync",
        default=False,
        help_text="Also answer …/sync: wait for the run and answer its result (202 with the "
        "uid if it takes longer than the sync timeout).",
    )
    sync_timeout = models.PositiveSmallIntegerField(
        "sync timeout (s)",
        default=25,
        validators=[MinValueValidator(1), MaxValueValidator(300)],
        help_text="How long a /sync call waits before answering 202 with the uid "
        "(keep it under your proxies' timeouts).",
    )
    callback_url = models.URLField(
        "callback URL",
        max_length=500,
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="When a run finishes, POST its status and output here, signed "
        "(Standard Webhooks headers; see the README). Leave blank for none.",
    )
    # The signing key, "whsec_<base64>". Stored as is, unlike the caller's token:
    # it must sign, and a hash cannot (see triggers/callbacks.py).
    callback_secret = models.CharField(max_length=100, blank=True, editable=False)
    ip_allowlist = models.TextField(
        "IP allowlist",
        blank=True,
        validators=[validate_ip_networks],
        help_text="Accept calls (and status reads) only from these addresses: IP networks "
        "such as 203.0.113.0/24 or 2001:db8::/32, separated by commas or lines. Empty: "
        "from anywhere. Others get 403.",
    )
    rate_limit = models.PositiveIntegerField(
        "rate limit",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Most calls accepted per period, all callers together; more get 429 "
        "with Retry-After. Empty: no limit.",
    )
    rate_limit_period = models.CharField(
        "per", max_length=8, choices=RatePeriod.choices, default=RatePeriod.MINUTE
    )
    debug_payload = models.JSONField(
        default=dict,
        blank=True,
        help_text="Input used to simulate a call (the Debug button, `fire_api --debug`): "
        "the JSON body for POST, query parameters for GET.",
    )
    publish_example = models.BooleanField(
        "publish the debug payload",
        default=False,
        help_text="Show the debug payload as the example input in the public OpenAPI "
        "document (/v1/openapi.json). Off: it stays in the admin.",
    )
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "API"
        ordering = ["module", "method"]
        constraints = [
            # Also the index the trigger's lookup by (module, method) uses.
            models.UniqueConstraint(fields=["module", "method"], name="api_module_method_unique")
        ]

    def __str__(self) -> str:
        return f"{self.module}/{self.method}"

    @property
    def names_valid(self) -> bool:
        """Module and method make URL segments (a row written by SQL or an old
        version may hold others: pages must still show it, to be corrected)."""
        return all(_NAME.fullmatch(name or "") for name in (self.module, self.method))

    @property
    def path(self) -> str | None:
        """The trigger's path; None when module or method is not a valid name."""
        if not self.names_valid:
            return None
        return reverse("trigger-async", kwargs={"module": self.module, "method": self.method})

    @property
    def url(self) -> str | None:
        path = self.path
        return (
            None if path is None else (settings.IOLINKER_BASE_URL or "http://localhost:8000") + path
        )

    @cached_property
    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The IP allowlist, parsed once per loaded definition (empty: anywhere)."""
        return ip_networks_parse(self.ip_allowlist) if self.ip_allowlist else []

    @property
    def has_secret(self) -> bool:
        if self.auth_mode == AuthMode.TOKEN:
            return bool(self.token_hash)
        if self.auth_mode == AuthMode.PASSWORD:
            return bool(self.auth_user and self.password_hash)
        return True


class IdempotencyKey(models.Model):
    """A caller's ``Idempotency-Key`` on an API, and the run it started.

    ``uid`` is not a foreign key: runs may be purged while the key still
    answers within its window (the replay then names a uid whose status is 404,
    as the original answer would by then). ``fingerprint`` identifies the
    request the key was first used with (triggers/services/idempotency.py, request_fingerprint).
    ``created_at`` is set by the service, not ``auto_now_add``: replacing an
    expired key starts its window again.
    """

    # No index of its own: the unique constraint's index starts with api_id and
    # serves the cascade on an API's deletion.
    api = models.ForeignKey(
        ApiDefinition, on_delete=models.CASCADE, related_name="idempotency_keys", db_index=False
    )
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    uid = models.BigIntegerField("execution uid")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            # Also the index of the trigger's lookup by (api, key), and what makes
            # a concurrent duplicate wait for the first request's transaction.
            models.UniqueConstraint(fields=["api", "key"], name="idempotency_key_unique_per_api")
        ]
        indexes = [
            # Serves the purge of expired keys (created_at < cutoff).
            models.Index(fields=["created_at"], name="idempotency_key_created_at"),
        ]

    def __str__(self) -> str:
        return f"{self.api_id}:{self.key}"


class CallbackStatus(models.TextChoices):
    PENDING = "pending"  # an attempt is due at next_attempt_at (or one is under way)
    DELIVERED = "delivered"
    FAILED = "failed"  # given up: out of attempts, or nowhere to send it


class CallbackDelivery(models.Model):
    """The completion callback of one finished run (see triggers/callbacks.py).

    Created in the transaction that records the run's final state, so a callback
    is never lost; its primary key is the run's uid (one callback per run) and
    its `webhook-id` header is derived from it, the same on every attempt.
    """

    execution = models.OneToOneField(
        "workflows.Execution",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="callback",
    )
    status = models.CharField(
        max_length=16, choices=CallbackStatus.choices, default=CallbackStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    # While pending: when the next attempt is due; during an attempt, when its
    # claim lapses (its worker died) and the sweeper may try again.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When a queue message was last sent for it (None: none since the last attempt).
    queued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "callback delivery"
        verbose_name_plural = "callback deliveries"
        ordering = ["-execution_id"]
        indexes = [
            # The sweeper's "pending deliveries due now" (callbacks_deliver_due).
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="callback_pending_due",
            ),
        ]

    def __str__(self) -> str:
        return f"callback of {self.execution_id} ({self.status})"

    @property
    def webhook_id(self) -> str:
        return f"exec_{self.execution_id}"


class CallbackAttempt(models.Model):
    """One POST of a completion callback: what was sent where, and what came back."""

    delivery = models.ForeignKey(
        CallbackDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveSmallIntegerField()
    url = models.CharField(max_length=500)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)  # empty when delivered
    # When the next attempt was scheduled (None: delivered or given up).
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "number"], name="callback_attempt_number_unique"
            )
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"

    @property
    def succeeded(self) -> bool:
        return not self.error


class TriggerStat(models.Model):
    """Calls refused in one minute, per API and error: the dashboard's "triggers
    refused" and the API List's refusals.

    One UPSERT per refusal (triggers/stats.py). Accepted calls are never counted
    here: they are their executions, and the trigger path stays one query.
    """

    minute = models.DateTimeField()
    # Not a foreign key: counts outlive the API, and a call of an unknown API
    # (404) has none (0).
    api_id = models.BigIntegerField(default=0)
    code = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField()
    refused = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # The UPSERT's conflict target; also the index of the dashboard's
            # "refusals since <minute>".
            models.UniqueConstraint(
                fields=["minute", "api_id", "code", "status"], name="trigger_stat_bucket"
            )
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.api_id} {self.code}: {self.refused}"
