"""The run's timeline as an inline SVG Gantt chart: one row per timeline entry, time in seconds
from the run's start. Static SVG and CSS only, so the report needs no script and no network."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from html import escape

from domain.review import EntryKind, EntryStatus, RunReview, TimelineEntry

STATUS_COLOURS = {
    EntryStatus.COMPLETED: "#2e7d32",
    EntryStatus.FAILED: "#c62828",
    EntryStatus.TIMED_OUT: "#ef6c00",
    EntryStatus.CANCELED: "#9e9e9e",
    EntryStatus.RUNNING: "#1565c0",
    EntryStatus.FIRED: "#6a1b9a",
}
RETRY_COLOUR = "#e53935"
_KIND_TAGS = {
    EntryKind.ACTIVITY: "",
    EntryKind.CHILD_WORKFLOW: "[child]",
    EntryKind.TIMER: "[timer]",
    EntryKind.UPDATE: "[update]",
    EntryKind.SIGNAL: "[signal]",
}

LABEL_WIDTH = 380
CHART_WIDTH = 720
RIGHT_MARGIN = 30
AXIS_HEIGHT = 34
ROW_HEIGHT = 22
BAR_HEIGHT = 14
LEGEND_HEIGHT = 36
# A 10 ms step in a 60 s run would be invisible; every entry stays clickable and countable.
MIN_BAR_WIDTH = 3.0
LABEL_CHARS = 54
MAX_TICKS = 10


def tick_step(span_s: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving at most MAX_TICKS ticks."""
    magnitude = 10.0 ** math.floor(math.log10(max(span_s, 1e-3) / MAX_TICKS))
    for factor in (1, 2, 5, 10):
        if span_s / (factor * magnitude) <= MAX_TICKS:
            return float(factor * magnitude)
    return 10 * magnitude


def gantt_svg(review: RunReview) -> str:
    origin, end = review.started_at, review.ends_at
    span = max((end - origin).total_seconds(), 1e-3)
    width = LABEL_WIDTH + CHART_WIDTH + RIGHT_MARGIN
    chart_bottom = AXIS_HEIGHT + ROW_HEIGHT * max(len(review.timeline), 1)
    height = chart_bottom + LEGEND_HEIGHT

    def x(moment: datetime) -> float:
        return LABEL_WIDTH + (moment - origin).total_seconds() / span * CHART_WIDTH

    parts = [
        f'<svg class="gantt" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="timeline of {escape(review.workflow_id)}">',
        _style(),
        '<defs><pattern id="retry-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffcdd2"/>'
        f'<rect width="3" height="6" fill="{RETRY_COLOUR}"/></pattern></defs>',
    ]
    parts += _axis(span, chart_bottom)
    for row, entry in enumerate(review.timeline):
        parts += _row(row, entry, end, x)
    if not review.timeline:
        parts.append(
            f'<text class="label" x="{LABEL_WIDTH}" y="{AXIS_HEIGHT + 15}">'
            "nothing was scheduled</text>"
        )
    parts += _legend(review.timeline, chart_bottom + 22)
    parts.append("</svg>")
    return "\n".join(parts)


def _style() -> str:
    fills = "".join(
        f".gantt .bar.{status.value}{{fill:{colour}}}" for status, colour in STATUS_COLOURS.items()
    )
    return (
        "<style>"
        ".gantt text{font:12px system-ui,sans-serif;fill:#212121}"
        ".gantt .tick text{fill:#616161;font-size:11px}"
        ".gantt .grid{stroke:#e0e0e0;stroke-width:1}"
        ".gantt .stripe{fill:#f5f5f5}"
        ".gantt .retry{fill:url(#retry-hatch)}"
        f"{fills}</style>"
    )


def _axis(span: float, chart_bottom: float) -> list[str]:
    step = tick_step(span)
    parts = ['<g class="axis">']
    count = int(span / step + 1e-9)
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    for i in range(count + 1):
        seconds = i * step
        tx = LABEL_WIDTH + seconds / span * CHART_WIDTH
        parts.append(
            f'<g class="tick"><line class="grid" x1="{tx:.1f}" y1="{AXIS_HEIGHT - 6}" '
            f'x2="{tx:.1f}" y2="{chart_bottom}"/>'
            f'<text x="{tx:.1f}" y="{AXIS_HEIGHT - 12}" text-anchor="middle">'
            f"{seconds:.{decimals}f} s</text></g>"
        )
    parts.append(f'<text x="8" y="{AXIS_HEIGHT - 12}">seconds from the run\'s start</text></g>')
    return parts


def _row(
    row: int, entry: TimelineEntry, run_end: datetime, x: Callable[[datetime], float]
) -> list[str]:
    top = AXIS_HEIGHT + row * ROW_HEIGHT
    bar_top = top + (ROW_HEIGHT - BAR_HEIGHT) / 2
    label = entry.label
    shown = clip_middle(
        label if entry.kind is EntryKind.ACTIVITY else f"{_KIND_TAGS[entry.kind]} {label}",
        LABEL_CHARS,
    )
    parts = []
    if row % 2:
        parts.append(
            f'<rect class="stripe" x="0" y="{top}" width="{LABEL_WIDTH + CHART_WIDTH}" '
            f'height="{ROW_HEIGHT}"/>'
        )
    parts.append(
        f'<text class="label" x="8" y="{top + 15}"><title>{escape(label)}</title>'
        f"{escape(shown)}</text>"
    )
    begins = entry.begins_at
    if begins is None:
        return parts
    ends = entry.ended_at or run_end
    left = x(begins)
    bar_width = max(x(ends) - left, MIN_BAR_WIDTH)
    parts.append(
        f'<rect class="bar {entry.status.value}" data-step="{escape(label)}" '
        f'data-kind="{entry.kind.value}" x="{left:.1f}" y="{bar_top:.1f}" '
        f'width="{bar_width:.1f}" height="{BAR_HEIGHT}" rx="2">'
        f"<title>{escape(_tooltip(entry))}</title></rect>"
    )
    if entry.attempts > 1 and entry.scheduled_at and entry.started_at:
        # Everything before the last attempt started was spent on attempts that failed.
        retry_width = max(x(entry.started_at) - left, MIN_BAR_WIDTH)
        parts.append(
            f'<rect class="retry" x="{left:.1f}" y="{bar_top:.1f}" width="{retry_width:.1f}" '
            f'height="{BAR_HEIGHT}" rx="2"><title>{escape(_retry_tooltip(entry))}</title></rect>'
        )
    return parts


def clip_middle(text: str, limit: int) -> str:
    """Shortened from the middle: the ends of "VenueRecovery dr-promotion/lab/venue/alpha/..."
    are what tell its rows apart."""
    if len(text) <= limit:
        return text
    head = limit // 3
    return text[:head] + "\u2026" + text[len(text) - (limit - head - 1) :]


def _tooltip(entry: TimelineEntry) -> str:
    took = "still running" if entry.duration_s is None else f"{entry.duration_s:.3f} s"
    lines = [f"{entry.label}: {entry.status.value}, {took}, {entry.attempts} attempt(s)"]
    lines += entry.failures
    return "\n".join(lines)


def _retry_tooltip(entry: TimelineEntry) -> str:
    failed = entry.attempts - 1
    return "\n".join([f"{failed} failed attempt(s) before the last", *entry.failures])


def _legend(timeline: list[TimelineEntry], y: float) -> list[str]:
    present = [s for s in STATUS_COLOURS if any(e.status is s for e in timeline)]
    keys = [(f"fill:{STATUS_COLOURS[s]}", s.value) for s in present]
    if any(e.attempts > 1 for e in timeline):
        keys.append(("fill:url(#retry-hatch)", "failed attempts (retried)"))
    parts = ['<g class="legend">']
    left = float(LABEL_WIDTH)
    for style, name in keys:
        parts.append(
            f'<rect class="swatch" x="{left:.0f}" y="{y - 10}" width="14" height="12" rx="2" '
            f'style="{style}"/><text x="{left + 19:.0f}" y="{y}">{escape(name)}</text>'
        )
        left += 30 + 7.2 * len(name)
    parts.append("</g>")
    return parts
