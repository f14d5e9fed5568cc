"""Rendering a review: Markdown, one self-contained HTML page, JSON; the same bytes whichever
way the history arrived."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from domain.review import RunReview
from drctl.history_export import export_document, load_history_file
from drctl.history_reader import read_history
from drctl.report_render import FORMATS, Format, render, render_html, render_json, text_timeline
from tests.unit.review.recorded import (
    MONITOR,
    PLANNED,
    UNPLANNED,
    VENUE_ALPHA,
    Document,
    attributes,
    history,
    payload,
)

RECORDED = [UNPLANNED, PLANNED, MONITOR, VENUE_ALPHA]
IDS = ["unplanned", "planned", "monitor", "venue"]


class _Elements(HTMLParser):
    """Counts start tags and checks every non-void element is closed in order."""

    VOID = frozenset({"meta", "link", "br", "img", "input", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()


def parsed(page: str) -> _Elements:
    elements = _Elements()
    elements.feed(page)
    elements.close()
    assert elements.open == []
    return elements


@pytest.mark.parametrize("path", RECORDED, ids=IDS)
def test_every_recorded_run_renders_in_every_format(path: Path) -> None:
    review = read_history(history(path))
    for fmt in FORMATS:
        assert review.workflow_id in render(review, fmt)


@pytest.mark.parametrize("path", RECORDED, ids=IDS)
def test_the_json_report_round_trips_into_the_same_review(path: Path) -> None:
    review = read_history(history(path))
    assert RunReview.model_validate_json(render_json(review)) == review


@pytest.mark.parametrize("path", RECORDED, ids=IDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_report_from_the_file_is_the_report_from_memory(path: Path, fmt: Format) -> None:
    from_memory = history(path)
    from_file, run_id = load_history_file(path)
    assert render(read_history(from_file, run_id), fmt) == render(read_history(from_memory), fmt)


@pytest.mark.parametrize("path", RECORDED, ids=IDS)
def test_an_export_renders_the_same_report_as_the_history_it_was_made_from(
    path: Path, tmp_path: Path
) -> None:
    live = history(path)
    run_id = live.run_id
    exported = tmp_path / "export.json"
    exported.write_text(export_document(live, run_id, "default"))
    reloaded, reloaded_run = load_history_file(exported)
    assert reloaded.workflow_id == live.workflow_id and reloaded_run == run_id
    for fmt in FORMATS:
        assert render(read_history(reloaded, reloaded_run), fmt) == render(
            read_history(live, run_id), fmt
        )


def test_the_markdown_report_has_each_section_of_a_promotion() -> None:
    report = render(read_history(history(PLANNED)), "md")
    for section in (
        "## Timeline, seconds from start",
        "## Run",
        "## Promotion",
        "## RTO breakdown",
        "## Replication gap",
        "## Venues",
        "## Approvals and decisions",
        "## Operator actions",
        "## Failures",
    ):
        assert f"\n{section}\n" in report
    assert "| RTO | 6.295 s |" in report
    assert "| approval | approve | bob | ok | 2026-11-22 05:07:03.932Z |" in report
    assert "| approval | completed | +0.093 s | 4.508 s | 1 | approved by bob |" in report


def test_the_text_timeline_draws_each_entry_across_the_run() -> None:
    review = read_history(history(VENUE_ALPHA))
    lines = text_timeline(review)
    assert len(lines) == 1 + len(review.timeline)
    connect = next(line for line in lines if line.startswith("connect_session"))
    # Three seconds of cooldown retries before the second attempt ran.
    assert "~" * 20 in connect and connect.endswith("x2 completed")


def test_the_html_report_has_one_gantt_bar_per_timeline_entry() -> None:
    review = read_history(history(UNPLANNED))
    elements = parsed(render_html(review))
    svgs = [attrs for tag, attrs in elements.tags if tag == "svg"]
    assert [a["class"] for a in svgs] == ["gantt"]
    bars = [
        a for tag, a in elements.tags if tag == "rect" and "bar" in (a.get("class") or "").split()
    ]
    assert len(bars) == len(review.timeline) == 15
    assert [b["data-step"] for b in bars][:2] == [
        "plan / load_promotion_plan",
        "confirm_primary_down",
    ]
    assert {b["class"] for b in bars} == {"bar completed"}


def test_retried_attempts_are_drawn_in_the_gantt() -> None:
    page = render_html(read_history(history(VENUE_ALPHA)))
    assert page.count('class="retry"') == 1
    assert "venue alpha: reconnect cooldown, retry after 3.00 s" in page


def test_the_html_report_needs_nothing_from_the_network() -> None:
    page = render_html(read_history(history(MONITOR)))
    elements = parsed(page)
    assert not [t for t, _ in elements.tags if t in ("script", "iframe", "object", "embed", "img")]
    links = [a.get("href") or a.get("src") for _, a in elements.tags if "href" in a or "src" in a]
    assert links == ["data:,"]
    # The SVG namespace is a name, not a fetch; nothing else may look like an address to load.
    assert re.findall(r"url\((?!#)", page) == []
    assert "@import" not in page


def test_every_text_in_the_html_report_is_escaped() -> None:
    def hostile_comment(doc: Document) -> None:
        update = next(
            e
            for e in doc["events"]
            if e["eventType"].endswith("WORKFLOW_EXECUTION_UPDATE_ACCEPTED")
        )
        request = attributes(update)["acceptedRequest"]
        request["input"]["args"]["payloads"][0] = payload(
            {"approver": "bob", "comment": '<script>alert("x")</script> & <b>'}
        )

    page = render_html(read_history(history(PLANNED, hostile_comment)))
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in page
    parsed(page)
