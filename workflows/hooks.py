"""Finish hooks: how ``workflows`` tells the outside that runs ended without
knowing who listens (``workflows`` never imports ``triggers``; a test enforces it).

Whoever ends runs (the worker's save of a chunk, cancel, the reaper) calls
``runs_finished`` inside the
transaction that records the final states, so a hook's writes (``triggers``
promises completion callbacks) commit with those states or not at all. Other
apps register at start (``AppConfig.ready``) under a name; a hook takes the list
of finished ``Execution`` objects (``uid`` and ``api_id`` are always loaded) and
must be cheap when it has nothing to do: it runs on every chunk a worker saves.
"""

from collections.abc import Callable, Iterable

from workflows.models import Execution

FinishHook = Callable[[list[Execution]], None]

# Registered hooks by name, in registration order. Public: a test may replace one
# (monkeypatch.setitem) to measure what it costs.
FINISH_HOOKS: dict[str, FinishHook] = {}


def finish_hook_register(*, name: str, hook: FinishHook) -> None:
    """Call ``hook`` with every batch of runs that reached a final state
    (registering a name again replaces its hook: ``ready()`` may run twice)."""
    FINISH_HOOKS[name] = hook


def runs_finished(executions: Iterable[Execution]) -> None:
    """Tell every hook that these runs ended; call inside the transaction that
    records their final states."""
    if not isinstance(executions, list):
        executions = list(executions)
    for hook in FINISH_HOOKS.values():
        hook(executions)
