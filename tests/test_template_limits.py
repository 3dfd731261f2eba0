"""Templates are bounded (workflows/templating.py): no value past MAX_TEXT, the
step's timeout holds while rendering, and each bound is a clear step error."""

import time

import pytest

from tests.test_engine import run
from workflows import templating
from workflows.models import ExecutionStatus

pytestmark = pytest.mark.django_db

HUGE = 1_000_000_000


@pytest.mark.parametrize(
    "template",
    [
        "{{ body.s * body.n }}",  # what a caller sends decides the size
        "{{ body.items * body.n }}",
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{{ body.s.ljust(body.n) }}",
        "{{ body.s|center(body.n) }}",
        "{{ '%0*d' % (body.n, 1) }}",
        "{{ '%01000000000d' % 1 }}",
        "{{ ('x' * 9000000) + ('x' * 9000000) }}",
        "{{ '{:>1000000000}'.format(1) }}",
        "{{ '{:{}}'.format(1, body.n) }}",
        "{{ 10 ** body.n }}",
        "{% set ns = namespace(x=3) %}{% for i in range(60) %}"
        "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x > 0 }}",  # squaring: 2^60 bits
        "{{ (body.s * 100000)|replace('x', 'x' * 1000) }}",
        "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
    ],
)
def test_a_template_cannot_build_a_huge_value(template):
    started = time.monotonic()
    execution = run(
        [("big", "transform", {"value": template})], body={"s": "x", "n": HUGE, "items": [1]}
    )
    assert execution.status == ExecutionStatus.FAILED
    assert "stopped:" in execution.error
    assert f"{templating.MAX_TEXT:,}" in execution.error or "bits" in execution.error
    assert time.monotonic() - started < 30  # not hung (generous)


def test_the_step_timeout_holds_while_rendering():
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    execution = run([{"key": "slow", "type": "transform", "config": {"value": slow}, "timeout": 1}])
    took = time.monotonic() - started
    assert execution.status == ExecutionStatus.FAILED
    assert "past the step's time limit" in execution.error
    assert took < 8  # the loops alone would take minutes


def test_rendering_without_a_step_timeout_has_a_ceiling(monkeypatch):
    monkeypatch.setattr(templating, "MAX_RENDER_SECONDS", 0.5)
    slow = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    execution = run([("slow", "transform", {"value": slow})])
    assert execution.status == ExecutionStatus.FAILED
    assert "past the step's time limit" in execution.error


def test_ordinary_templates_still_render():
    value = {
        "padded": "{{ '%05d' % body.n }}",
        "formatted": "{{ '{:>4}'.format(body.s) }}",
        "joined": "{{ body.items|join('-') }}",
        "looped": "{% for i in body.items %}{{ i }}{% endfor %}",
        "concat": "{{ 'a' ~ body.s ~ (body.s * 3) }}",
        "power": "{{ 2 ** 64 }}",
        "star": "{{ 'a * b = %s' % (body.n * 2) }}",
        "order": "Order 12345678: {{ body.s|upper }}",
    }
    execution = run([("ok", "output", {"value": value})], body={"s": "x", "n": 7, "items": [1, 2]})
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == {
        "padded": "00007",
        "formatted": "   x",
        "joined": "1-2",
        "looped": "12",
        "concat": "axxxx",
        "power": 2**64,
        "star": "a * b = 14",
        "order": "Order 12345678: X",
    }
