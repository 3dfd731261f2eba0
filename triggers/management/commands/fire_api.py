"""`manage.py fire_api`: fire an API as a caller would (same service as HTTP, without
caller authentication) and print the execution uid; --wait prints the result."""

import json

from django.core.management.base import BaseCommand, CommandError

from iolinker.errors import ApiError
from triggers import services
from workflows.selectors import execution_detail, execution_wait_final


class Command(BaseCommand):
    HEADERS = {"user-agent": "iolinker fire_api"}
    help = (
        "Fire an API as a caller would (same service as HTTP, without caller "
        "authentication) and print the execution uid; --wait prints the result."
    )

    def add_arguments(self, parser):
        parser.add_argument("module")
        parser.add_argument("method")
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--payload", help="JSON object: the body (POST) or query parameters (GET)"
        )
        source.add_argument("--payload-file", help="Read the payload from this JSON file")
        source.add_argument(
            "--debug", action="store_true", help="Use the API's debug payload (the default)"
        )
        parser.add_argument(
            "--idempotency-key",
            metavar="KEY",
            help="As the Idempotency-Key header: the same key with the same payload within "
            "IOLINKER_IDEMPOTENCY_SECONDS prints the first run's uid and starts nothing",
        )
        parser.add_argument(
            "--wait",
            type=float,
            metavar="SECONDS",
            help="Wait up to SECONDS for the run to finish (needs a running qcluster) and "
            "print it; exit status 1 if it failed or did not finish",
        )

    def handle(
        self, *args, module, method, payload, payload_file, debug, wait, idempotency_key, **options
    ):
        try:
            api = services.api_get(module=module, method=method)
            accepted = services.api_fire(
                api=api,
                payload=self._payload(api, payload, payload_file),
                idempotency_key=idempotency_key,
                headers=self.HEADERS,
            )
        except ApiError as exc:
            raise CommandError(exc.message) from None
        uid = accepted.uid
        if accepted.replayed:
            self.stderr.write(f"Idempotency key already used: run {uid} was not started again")
        if wait is None:
            self.stdout.write(str(uid))
            return
        execution = execution_wait_final(uid=uid, timeout=wait)
        if execution is None:
            raise CommandError(f"Execution {uid} was deleted")
        detail = execution_detail(uid=execution.uid)
        self.stdout.write(json.dumps(detail, indent=2, ensure_ascii=False))
        if execution.status != "succeeded":
            raise CommandError(f"Execution {execution.uid} is {execution.status}")

    def _payload(self, api, payload, payload_file) -> dict:
        try:
            if payload is not None:
                data = json.loads(payload)
            elif payload_file:
                with open(payload_file, encoding="utf-8") as fh:
                    data = json.load(fh)
            else:
                data = api.debug_payload or {}
        except (OSError, ValueError) as exc:
            raise CommandError(f"Invalid payload: {exc}") from None
        if not isinstance(data, dict):
            raise CommandError("The payload must be a JSON object")
        return data
