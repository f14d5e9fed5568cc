"""A review rendered as Markdown, one self-contained HTML page, or JSON.

Every byte of output is a function of the review alone (no clock, no host, no link to a server),
so the report of a run is the same whether its history was fetched live or read from an export.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from html import escape
from typing import Literal

from domain.review import RunReview, TimelineEntry
from drctl.report_gantt import clip_middle, gantt_svg
from drctl.report_tables import Table, offset, report_tables, seconds

Format = Literal["md", "html", "json"]
FORMATS: tuple[Format, ...] = ("md", "html", "json")
TEXT_TIMELINE_WIDTH = 60
SHORT_CELL = 24


def render(review: RunReview, fmt: Format) -> str:
    renderers: dict[Format, Callable[[RunReview], str]] = {
        "md": render_markdown,
        "html": render_html,
        "json": render_json,
    }
    return renderers[fmt](review)


def render_json(review: RunReview) -> str:
    """The review as data: every field, keys sorted, so two exports of one run diff cleanly."""
    return json.dumps(review.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def title(review: RunReview) -> str:
    return f"Review of {review.workflow_type} {review.workflow_id}"


def headline(review: RunReview) -> str:
    parts = [review.status.value]
    if review.drill is not None and review.drill.passed is not None:
        parts.append("drill PASSED" if review.drill.passed else "drill FAILED")
    outcome = review.outcome
    if outcome:
        parts.append(f"outcome {outcome}")
    if review.promotion is not None and review.promotion.rto_s is not None:
        parts.append(f"RTO {seconds(review.promotion.rto_s)}")
    parts.append(f"run {review.run_id}")
    return ", ".join(parts)


# --- Markdown --------------------------------------------------------------------------------


def render_markdown(review: RunReview) -> str:
    lines = [f"# {_md(title(review))}", "", _md(headline(review)), ""]
    lines += ["## Timeline, seconds from start", "", "```text", *text_timeline(review), "```", ""]
    for table in report_tables(review):
        lines += [f"## {_md(table.title)}", ""]
        if not table.rows:
            lines += [f"_{_md(table.empty)}_", ""]
            continue
        columns = ("field", "value") if table.facts else table.columns
        lines.append("| " + " | ".join(_md(c) for c in columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in table.rows]
        lines.append("")
    return "\n".join(lines)


def _md(value: str) -> str:
    """Text that stays text inside a Markdown table cell."""
    for char in ("\\", "|", "<", "`", "*"):
        value = value.replace(char, "\\" + char)
    return value.replace("\r", " ").replace("\n", " ")


def text_timeline(review: RunReview) -> list[str]:
    """One line per entry: ``#`` while it ran, ``~`` for attempts that failed and were retried."""
    origin, end = review.started_at, review.ends_at
    span = max((end - origin).total_seconds(), 1e-3)

    def column(moment: datetime) -> int:
        from_start = (moment - origin).total_seconds()
        return min(int(from_start / span * TEXT_TIMELINE_WIDTH), TEXT_TIMELINE_WIDTH - 1)

    width = max((len(e.label) for e in review.timeline), default=10)
    width = min(width, 56)
    half = TEXT_TIMELINE_WIDTH // 2
    lines = [f"{'':<{width}}  {'0 s':<{half}}{f'{span:.3f} s':>{TEXT_TIMELINE_WIDTH - half}}"]
    for entry in review.timeline:
        lines.append(
            f"{clip_middle(entry.label, width):<{width}} |{_bar(entry, column, end)}| "
            f"{offset(entry.begins_at, origin)} {seconds(entry.duration_s)} "
            f"x{entry.attempts} {entry.status.value}"
        )
    return lines


def _bar(entry: TimelineEntry, column: Callable[[datetime], int], end: datetime) -> str:
    cells = [" "] * TEXT_TIMELINE_WIDTH
    if entry.begins_at is None:
        return "".join(cells)
    first, last = column(entry.begins_at), column(entry.ended_at or end)
    for i in range(first, last + 1):
        cells[i] = "#"
    if entry.attempts > 1 and entry.started_at is not None:
        for i in range(first, column(entry.started_at)):
            cells[i] = "~"
    return "".join(cells)


# --- HTML ------------------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light}
body{margin:0;background:#fafafa;color:#212121;font:14px/1.45 system-ui,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #e0e0e0;padding-bottom:4px}
.headline{margin:0 0 16px;color:#424242}
.chart{overflow-x:auto;background:#fff;border:1px solid #e0e0e0;padding:8px 0}
table{border-collapse:collapse;background:#fff;margin:0 0 8px;min-width:40%}
th,td{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5;font-weight:600}
table.facts th{width:220px}
td{font-variant-numeric:tabular-nums;overflow-wrap:break-word}
section{overflow-x:auto}
td.short{white-space:nowrap}
.empty{color:#757575;font-style:italic}
"""

# No script, no fetch: the page renders from this file alone, even opened from an air-gapped disk.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(review: RunReview) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title(review))}</title>",
        '<link rel="icon" href="data:,">',
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>{escape(title(review))}</h1>",
        f'<p class="headline">{escape(headline(review))}</p>',
        '<section id="timeline">',
        "<h2>Timeline, seconds from start</h2>",
        f'<div class="chart">{gantt_svg(review)}</div>',
        "</section>",
    ]
    for table in report_tables(review):
        out.append(_html_table(table))
    out += ["</main>", "</body>", "</html>", ""]
    return "\n".join(out)


def _html_table(table: Table) -> str:
    parts = [f"<section><h2>{escape(table.title)}</h2>"]
    if not table.rows:
        parts.append(f'<p class="empty">{escape(table.empty)}</p></section>')
        return "".join(parts)
    if table.facts:
        parts.append('<table class="facts"><tbody>')
        for key, value in table.rows:
            parts.append(f"<tr><th>{escape(key)}</th>{_cell(value)}</tr>")
    else:
        parts.append("<table><thead><tr>")
        parts += [f"<th>{escape(c)}</th>" for c in table.columns]
        parts.append("</tr></thead><tbody>")
        for row in table.rows:
            parts.append("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>")
    parts.append("</tbody></table></section>")
    return "\n".join(parts)


def _cell(text: str) -> str:
    # Short cells are figures and names ("+0.123 s", "completed"): squeezing a wide table must
    # wrap the long messages, never split a figure from its unit.
    if len(text) <= SHORT_CELL:
        return f'<td class="short">{escape(text)}</td>'
    return f"<td>{escape(text)}</td>"
