"""Templates are bounded (workflows/templating.py, workflows/template_bounds.py):
no value past MAX_TEXT, checked before it is built, nor everything one rendering
writes; the step's timeout holds while rendering; each bound, and running out of
memory or recursion anyway, is a clear step error."""

import os
import resource
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
        # Each of these would build gigabytes from bounded parts, before any check
        # of the result could run: estimated from the arguments first.
        "{{ (body.tab * 1000).expandtabs(9000000) }}",
        "{% set s = 'x' * 9000000 %}{{ ([s] * 1000)|join }}",
        "{% set s = 'x' * 9000000 %}{{ ''.join([s] * 1000) }}",
        "{% set s = 'x' * 9000000 %}{{ ([s] * 1000)|tojson }}",
        "{% set s = 'x' * 9000000 %}{{ ([s] * 1000)|string }}",
        "{% set s = 'x' * 9000000 %}{{ ([s] * 1000)|pprint }}",
        "{% set s = 'x' * 9000000 %}{{ 'a' ~ ([s] * 1000) }}",
        "{% set s = 'x' * 9000000 %}{{ [s] * 1000 }}",  # str() of the output
        "{% set s = 'x' * 9000000 %}{{ s }}{{ s }}",  # the whole text, not each chunk
        "{% set s = 'x' * 9000000 %}{{ ([s] * 1000) }}",  # a whole value too
        "{% set s = 'x' * 9000000 %}{% set c %}{% for i in range(1000) %}{{ s }}"
        "{% endfor %}{% endset %}{{ c|length }}",  # a captured block
        "{{ ('%9000000d' * 1000) % ((1,) * 1000) }}",  # each field under the bound
        "{{ ('{:>9000000}' * 1000).format(*((1,) * 1000)) }}",
        "{{ ('%9000000s' * 1000)|format(*((1,) * 1000)) }}",
        "{{ ('a b ' * 1000)|wordwrap(1, true, 'y' * 9000000) }}",
        "{{ ([[1] * 9000000] * 1000)|sum(start=[]) }}",
        "{% set ns = namespace(x=['x']) %}{% for i in range(60) %}"
        "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",  # 2^60 leaves, shared
    ],
)
def test_a_template_cannot_build_a_huge_value(template):
    started = time.monotonic()
    execution = run(
        [("big", "transform", {"value": template})],
        body={"s": "x", "n": HUGE, "items": [1], "tab": "\t"},
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
        "json": "{{ body.items|tojson }}",
        "fields": "{{ '%-3s|%03d|%.2f' % (body.s, body.n, 1.5) }}",
        "format": "{{ '{}-{:>3}'.format(body.s, body.n) }}",
        "filter": "{{ '%s=%s'|format(body.s, body.n) }}",
        "wrapped": "{{ 'a b c'|wordwrap(1) }}",
        "sum": "{{ [[1], [2]]|sum(start=[]) }}",
        "strjoin": "{{ '-'.join(['a', body.s]) }}",
        "tabs": "{{ 'a\tb'.expandtabs(4) }}",
        "captured": "{% set c %}{{ body.s }}!{% endset %}{{ c }}{{ c }}",
        "pretty": "{{ body.items|pprint }}",
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
        "json": "[1, 2]",
        "fields": "x  |007|1.50",
        "format": "x-  7",
        "filter": "x=7",
        "wrapped": "a\nb\nc",
        "sum": [1, 2],
        "strjoin": "a-x",
        "tabs": "a   b",
        "captured": "x!x!",
        "pretty": "[1, 2]",
    }


def test_large_text_with_newlines_inside_a_value_is_not_refused():
    # 3 MB of lines inside a list: its str() and JSON are about 3.6 MB, well within.
    text = "a line of text\n" * 200_000
    execution = run(
        [
            (
                "ok",
                "transform",
                {"value": {"whole": "{{ [body.text] }}", "str": "{{ [body.text]|string|length }}"}},
            )
        ],
        body={"text": text},
    )
    assert execution.status == ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output["whole"] == [text]
    assert execution.output["str"] == len(repr([text]))


def test_everything_one_config_renders_counts_together():
    value = {"a": "{{ 'x' * 6000000 }}", "b": "{{ 'x' * 6000000 }}"}  # each under the bound
    execution = run([("big", "transform", {"value": value})])
    assert execution.status == ExecutionStatus.FAILED
    assert "stopped:" in execution.error and f"{templating.MAX_TEXT:,}" in execution.error


def test_templates_cannot_mutate_lists():
    # extend() doubling a list 40 times would take terabytes, one call at a time.
    template = "{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}"
    execution = run([("grow", "transform", {"value": template})])
    assert execution.status == ExecutionStatus.FAILED
    assert "unsafe" in execution.error


def test_lipsum_is_not_available():
    execution = run([("lorem", "transform", {"value": "{{ lipsum(100000, max=100000) }}"})])
    assert execution.status == ExecutionStatus.FAILED
    assert "lipsum" in execution.error and "undefined" in execution.error


def test_endless_recursion_is_a_step_error():
    template = "{% macro m(n) %}{{ m(n) }}{% endmacro %}{{ m(1) }}"
    execution = run([("deep", "transform", {"value": template})])
    assert execution.status == ExecutionStatus.FAILED
    assert "stopped: nested too deeply" in execution.error


def test_a_template_nested_too_deeply_to_compile_is_refused_on_save():
    deep = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    assert "nested too deeply" in " ".join(templating.check(deep))


def test_running_out_of_memory_is_the_steps_template_error():
    """A real MemoryError (an address-space limit in a forked child, where a
    ten-million-item list needs 80 MB): the template's ordinary error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child reports through the pipe)
        os.close(read_end)
        try:
            with open("/proc/self/statm") as statm:
                size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limit = size + 40_000_000
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:
                templating.render("{{ ([1] * 9000000)|length }}", {})
                message = "rendered"
            except templating.ExpressionError as exc:
                message = str(exc)
        except BaseException as exc:  # noqa: BLE001 - anything else is the failure
            message = f"crashed: {type(exc).__name__}"
        os.write(write_end, message.encode()[:500])
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answer:
        message = answer.read().decode()
    os.waitpid(pid, 0)
    assert "stopped: out of memory" in message, message
