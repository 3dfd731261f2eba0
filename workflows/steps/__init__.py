"""The step library: one module per step type, found by this registry.

A new step type is one new module in this package defining a ``StepType``
subclass decorated with ``@register``; nothing else changes.
"""

import importlib
import pkgutil

from workflows.steps.base import REGISTRY, StepContext, StepError, StepType, register

__all__ = ["REGISTRY", "StepContext", "StepError", "StepType", "choices", "get", "register"]


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def get(name: str) -> StepType:
    try:
        return REGISTRY[name]
    except KeyError:
        raise StepError(f"Unknown step type {name!r}") from None


def choices() -> list[tuple[str, str]]:
    return sorted((name, step.label) for name, step in REGISTRY.items())


_load_all()
