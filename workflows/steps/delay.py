"""The delay step: wait in place for short delays; for long ones the run ends
``waiting`` and is resumed later, holding no worker."""

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from workflows.steps.base import StepError, StepType, register

MAX_DELAY_S = 30 * 24 * 3600


@register
class Delay(StepType):
    """Wait ``seconds`` (a number or an expression). A short wait (up to
    IOLINKER_DELAY_INLINE_SECONDS) sleeps in the worker; a longer one records the
    run as ``waiting`` and frees the worker: the run is queued again when the time
    comes (django-q2's scheduler looks every 30 s, so it goes on up to ~30 s
    late) and resumes after this step without repeating the steps before it.
    Output: ``{"seconds": n, "resumeAt": iso}`` (a long wait) or ``{"waited": n}``."""

    name = "delay"
    label = "Delay (wait, without holding a worker for long waits)"
    schema = {
        "type": "object",
        "properties": {
            "seconds": {
                "anyOf": [
                    {"type": "number", "minimum": 0, "maximum": MAX_DELAY_S},
                    {"type": "string"},
                ]
            }
        },
        "required": ["seconds"],
        "additionalProperties": False,
    }

    def run(self, resolved, ctx):
        seconds = resolved["seconds"]
        if isinstance(seconds, str):
            try:
                seconds = float(seconds)
            except ValueError:
                raise StepError(f"seconds must be a number, got {seconds!r}") from None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise StepError(f"seconds must be a number, got {seconds!r}")
        if not 0 <= seconds <= MAX_DELAY_S:
            raise StepError(f"seconds must be between 0 and {MAX_DELAY_S}, got {seconds}")
        if seconds <= settings.IOLINKER_DELAY_INLINE_SECONDS:
            ctx.sleep(seconds)
            return {"waited": seconds}
        resume_at = timezone.now() + timedelta(seconds=seconds)
        return {"seconds": seconds, "resumeAt": resume_at.isoformat()}

    def hold_until(self, output):
        if isinstance(output, dict) and isinstance(output.get("resumeAt"), str):
            return datetime.fromisoformat(output["resumeAt"])
        return None
