"""A workflow's definition drawn as an SVG graph, on the server (no JS library).

Steps run top to bottom, so they are drawn as a column of boxes in list order;
a loop's body is drawn indented under the loop step, in a dashed frame. Arrows:

* the following step (grey, straight down), unless the step jumps or ends the run;
* ``next`` jumps (blue) and a condition's cases and default (amber, labelled);
* ``on_error: branch`` to ``error_next`` (red, dashed, "error");
* ``end`` (a jump to it, or the last step) goes to the End node.

Jumps only go forward (workflows/definition.py), so every arrow but the loop's
"next item" points down; each jump gets its own lane to the right of the boxes.
"""

import json
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from workflows.definition import END

BOX_W, BOX_H, ROW_H, INDENT, MARGIN, LANE_W = 210, 38, 58, 28, 16, 16
COLOURS = {
    "flow": "#8a8a8a",
    "next": "#417690",
    "case": "#b7791f",
    "error": "#ba2121",
    "loop": "#5b8c5a",
}
# Step types that never go on to the following step.
TERMINAL_TYPES = {"fail"}


@dataclass
class _Node:
    key: str  # unique in the drawing: "loop.body_key" for a loop's body
    label: str
    type: str
    row: int
    depth: int
    title: str = ""

    @property
    def x(self) -> int:
        return MARGIN + self.depth * INDENT

    @property
    def y(self) -> int:
        return MARGIN + self.row * ROW_H


@dataclass
class _Edge:
    source: str
    target: str
    kind: str
    label: str = ""


@dataclass
class _Drawing:
    nodes: dict[str, _Node] = field(default_factory=dict)
    edges: list[_Edge] = field(default_factory=list)
    frames: list[tuple[int, int, int, str]] = field(default_factory=list)  # first/last row, depth
    row: int = 0


def _targets_of(step: dict) -> list[tuple[str, str, str]]:
    """(target, kind, label) of a step's jumps, as the engine reads them."""
    out = []
    config = step.get("config") or {}
    if step.get("type") == "condition":
        for i, case in enumerate(config.get("cases") or []):
            if isinstance(case, dict) and case.get("next"):
                out.append((case["next"], "case", f"case {i}"))
        if config.get("default"):
            out.append((config["default"], "case", "default"))
    if step.get("next"):
        out.append((step["next"], "next", "next"))
    if step.get("on_error") == "branch" and step.get("error_next"):
        out.append((step["error_next"], "error", "error"))
    return out


def _layout(steps: list[dict], drawing: _Drawing, *, depth: int, prefix: str) -> list[str]:
    """Place ``steps`` (and loop bodies) and their arrows; returns the keys of
    the nodes whose run goes on after this list (to the caller's next step)."""
    keys = [prefix + str(step.get("key", "?")) for step in steps]
    leaving: list[str] = []
    for index, step in enumerate(steps):
        key = keys[index]
        title = json.dumps(step.get("config") or {}, indent=1, ensure_ascii=False)[:800]
        drawing.nodes[key] = _Node(
            key, str(step.get("key", "?")), str(step.get("type", "?")), drawing.row, depth, title
        )
        drawing.row += 1
        following = keys[index + 1] if index + 1 < len(steps) else None
        body = (step.get("config") or {}).get("steps") if step.get("type") == "loop" else None
        if isinstance(body, list) and body:
            first_row = drawing.row
            body_keys = [key + "." + str(s.get("key", "?")) for s in body]
            drawing.edges.append(_Edge(key, body_keys[0], "loop"))
            _layout(body, drawing, depth=depth + 1, prefix=key + ".")
            drawing.frames.append((first_row, drawing.row - 1, depth + 1, "for each item"))
        jumps = _targets_of(step)
        for target, kind, label in jumps:
            full = END if target == END else prefix + target
            drawing.edges.append(_Edge(key, full, kind, label))
        goes_on = step.get("type") not in TERMINAL_TYPES and not step.get("next")
        if step.get("type") == "condition" and (step.get("config") or {}).get("default"):
            goes_on = False  # no case true goes to the default, not on
        if goes_on:
            if following:
                drawing.edges.append(_Edge(key, following, "flow"))
            else:
                leaving.append(key)
    return leaving


def definition_svg(definition: dict) -> SafeString:
    """The definition's steps as an inline SVG (safe HTML)."""
    steps = definition.get("steps") or []
    drawing = _Drawing()
    if not steps:
        return mark_safe('<p class="help">No steps yet.</p>')  # noqa: S308 - constant
    leaving = _layout(steps, drawing, depth=0, prefix="")
    # Body steps that end their list go back to the loop for the next item: drawn
    # as the frame; top-level ones end the run.
    for key in leaving:
        drawing.edges.append(_Edge(key, END, "flow"))
    end_row = drawing.row
    drawing.nodes[END] = _Node(END, "End", "", end_row, 0)
    max_depth = max(n.depth for n in drawing.nodes.values())
    lanes_x = MARGIN + BOX_W + max_depth * INDENT + 18
    jumps = [e for e in drawing.edges if e.kind not in ("flow",) or _skips(drawing, e)]
    width = lanes_x + LANE_W * (len(jumps) + 1) + 60
    height = MARGIN * 2 + end_row * ROW_H + BOX_H
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="iol-graph" role="img" '
        f'aria-label="Workflow graph" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        "<defs>",
        *(
            f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
            f'fill="{colour}"/></marker>'
            for kind, colour in COLOURS.items()
        ),
        "</defs>",
    ]
    for first, last, depth, label in drawing.frames:
        x = MARGIN + depth * INDENT - 8
        y = MARGIN + first * ROW_H - 8
        h = (last - first) * ROW_H + BOX_H + 16
        parts.append(
            f'<rect x="{x}" y="{y}" width="{BOX_W + 16}" height="{h}" rx="8" fill="none" '
            f'stroke="{COLOURS["loop"]}" stroke-dasharray="5 4"/>'
            f'<text x="{x + BOX_W + 10}" y="{y - 3}" font-size="10" text-anchor="end" '
            f'fill="{COLOURS["loop"]}">{escape(label)}</text>'
        )
    lane = 0
    exits: dict[str, int] = {}  # lane arrows already leaving each node
    for edge in drawing.edges:
        source, target = drawing.nodes[edge.source], drawing.nodes.get(edge.target)
        if target is None:
            continue  # an invalid target: the form's validation names it
        colour = COLOURS[edge.kind]
        dash = ' stroke-dasharray="6 4"' if edge.kind == "error" else ""
        if edge.kind in ("flow", "loop") and not _skips(drawing, edge):
            x1 = source.x + BOX_W // 2 if edge.kind == "flow" else source.x + 14
            x2 = target.x + BOX_W // 2 if edge.kind == "flow" else target.x + 14
            if target.key == END:
                x2 = target.x + 40
            parts.append(
                f'<path d="M{x1},{source.y + BOX_H} L{x2},{target.y}" stroke="{colour}" '
                f'fill="none" stroke-width="1.5" marker-end="url(#arrow-{edge.kind})"/>'
            )
            if edge.label:
                parts.append(
                    f'<text x="{x2 + 6}" y="{target.y - 6}" font-size="10" '
                    f'fill="{colour}">{escape(edge.label)}</text>'
                )
            continue
        lane += 1
        lx = lanes_x + lane * LANE_W
        exits[source.key] = exits.get(source.key, 0) + 1
        # Leave from the lower half of a box, arrive in the upper half.
        y1 = source.y + BOX_H // 2 + 4 + 7 * (exits[source.key] - 1)
        y2 = target.y + 10
        tx = target.x + (80 if target.key == END else BOX_W)
        parts.append(
            f'<path d="M{source.x + BOX_W},{y1} H{lx - 6} Q{lx},{y1} {lx},{y1 + 6} '
            f'V{y2 - 6} Q{lx},{y2} {lx - 6},{y2} H{tx}" stroke="{colour}" fill="none" '
            f'stroke-width="1.5"{dash} marker-end="url(#arrow-{edge.kind})"/>'
        )
        if edge.label:
            parts.append(
                f'<text x="{lx + 4}" y="{y1 + 16}" font-size="10" fill="{colour}">'
                f"{escape(edge.label)}</text>"
            )
    for node in drawing.nodes.values():
        if node.key == END:
            parts.append(
                f'<rect x="{node.x}" y="{node.y}" width="80" height="{BOX_H}" rx="19" '
                f'fill="#444"/><text x="{node.x + 40}" y="{node.y + 24}" font-size="13" '
                f'fill="#fff" text-anchor="middle">End</text>'
            )
            continue
        parts.append(
            f'<g class="iol-node" data-key="{escape(node.key)}"><title>{escape(node.title)}</title>'
            f'<rect x="{node.x}" y="{node.y}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="#f4f8fa" stroke="#417690"/>'
            f'<text x="{node.x + 10}" y="{node.y + 16}" font-size="13" font-weight="bold" '
            f'fill="#222">{escape(node.label)}</text>'
            f'<text x="{node.x + 10}" y="{node.y + 31}" font-size="11" '
            f'fill="#666">{escape(node.type)}</text></g>'
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text above is escaped


def _skips(drawing: _Drawing, edge: _Edge) -> bool:
    """A "following step" arrow that is not to the next row or at another depth
    (after a loop's body, or to End past a frame) is drawn in a lane."""
    source, target = drawing.nodes[edge.source], drawing.nodes.get(edge.target)
    if target is None or edge.kind != "flow":
        return False
    if target.key == END:
        return target.row != source.row + 1
    return target.row != source.row + 1 or target.depth != source.depth
