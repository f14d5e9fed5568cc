"""Reading recorded lab histories back into a review: what ran, when, how often, who acted."""

from __future__ import annotations

from decimal import Decimal

import pytest
from temporalio.client import WorkflowHistory

from domain.promotion import PromotionReport
from domain.review import EntryKind, EntryStatus, RunStatus
from drctl.history_reader import BINARY_PAYLOAD, HistoryError, read_history
from tests.unit.review.recorded import (
    MONITOR,
    PLANNED,
    UNPLANNED,
    VENUE_ALPHA,
    Document,
    activity_events,
    attributes,
    document,
    history,
    payload,
    result_of,
    seconds_between_events,
)

PROMOTION_ACTIVITIES = [
    "load_promotion_plan",
    "confirm_primary_down",
    "notify",
    "acquire_lease",
    "fence_primary",
    "sync_dr_state",
    "fetch_dr_book",
    "activate_dr",
    "verify_positions",
    "release_trading",
    "update_dns",
    "notify",
]


def test_the_unplanned_promotion_lists_every_activity_in_order_with_attempts_and_durations() -> (
    None
):
    review = read_history(history(UNPLANNED))
    activities = [e for e in review.timeline if e.kind is EntryKind.ACTIVITY]
    assert [e.name for e in activities] == PROMOTION_ACTIVITIES
    assert all(e.status is EntryStatus.COMPLETED and e.attempts == 1 for e in activities)
    doc = document(UNPLANNED)
    for entry in activities[:2] + activities[3:5]:
        scheduled, related = activity_events(doc, entry.name)
        completed = next(e for e in related if e["eventType"].endswith("COMPLETED"))
        assert entry.duration_s == seconds_between_events(scheduled, completed), entry.name
    confirm = activities[1]
    assert confirm.name == "confirm_primary_down"
    # Three probes a second apart: the confirmation takes about two seconds.
    assert confirm.duration_s is not None and 1.5 < confirm.duration_s < 3.0


def test_the_venue_recoveries_are_child_workflows_inside_the_venue_recovery_step() -> None:
    review = read_history(history(UNPLANNED))
    children = [e for e in review.timeline if e.kind is EntryKind.CHILD_WORKFLOW]
    assert [c.workflow_id for c in children] == [
        f"dr-promotion/lab/venue/{venue}/epoch-2/try-1" for venue in ("alpha", "beta", "gamma")
    ]
    assert {c.workflow_type for c in children} == {"VenueRecovery"}
    assert all(c.status is EntryStatus.COMPLETED for c in children)
    assert all(c.step == "venue_recovery" for c in children)
    assert all(c.started_at and c.scheduled_at and c.started_at >= c.scheduled_at for c in children)


def test_activities_are_labelled_with_the_step_that_ran_them() -> None:
    review = read_history(history(UNPLANNED))
    steps = {e.name: e.step for e in review.timeline if e.kind is EntryKind.ACTIVITY}
    assert steps["load_promotion_plan"] == "plan"
    assert steps["fetch_dr_book"] == "snapshot_dr_book"
    assert steps["acquire_lease"] == "acquire_lease"
    # Notifications run between steps and belong to none.
    assert [e.step for e in review.timeline if e.name == "notify"] == [None, None]


def test_the_rto_figures_are_the_promotion_reports_own() -> None:
    report = PromotionReport.model_validate(result_of(document(UNPLANNED)))
    summary = read_history(history(UNPLANNED)).promotion
    assert summary is not None
    assert summary.rto_s == report.rto_s == pytest.approx(6.617687)
    assert summary.lease_to_dns_s == report.lease_to_dns_s
    assert [(s.name, s.duration_s, s.attempts, s.status) for s in summary.rto_breakdown] == [
        (s.name, s.duration_s, s.attempts, s.status) for s in report.steps
    ]
    assert (
        summary.orders_cancelled == report.orders_cancelled == {"alpha": 1, "beta": 0, "gamma": 1}
    )
    assert summary.replication_gap is not None and report.replication_gap is not None
    assert summary.replication_gap.gap_events == report.replication_gap.gap_events
    assert summary.replication_gap.behind_before == report.replication_gap.behind_before
    assert {v.venue: v.counts for v in summary.venues} == {v.venue: v.counts for v in report.venues}
    assert summary.discrepancy_notional == report.discrepancy_notional == Decimal(0)
    assert summary.outcome == "promoted" and summary.epoch == 2 and summary.previous_epoch == 1


def test_the_run_itself_is_described_from_its_start_and_end() -> None:
    review = read_history(history(UNPLANNED))
    assert review.workflow_id == "dr-promotion/lab"
    assert review.workflow_type == "Promotion"
    assert review.run_id == "01a201a6-2244-7c27-8505-b07aeac99f55"
    assert review.status is RunStatus.COMPLETED
    assert review.task_queue == "region-dr"
    assert review.input["requested_by"] == "oncall"
    assert review.search_attributes == {
        "DrKind": "incident",
        "DrOutcome": "promoted",
        "DrSystem": "lab",
    }
    assert review.outcome == "promoted"
    assert review.history_events == 100
    assert review.failure is None and review.notes == []


def test_the_planned_promotion_shows_who_approved_it() -> None:
    review = read_history(history(PLANNED))
    (approval,) = review.operator_actions
    assert (approval.kind, approval.name, approval.by, approval.comment) == (
        "update",
        "approve",
        "bob",
        "ok",
    )
    assert approval.identity == "17623@vm"
    assert approval.accepted and approval.result == "approved by bob"
    assert review.promotion is not None
    assert [(a.kind, a.by) for a in review.promotion.actions] == [("approval", "bob")]
    assert review.promotion.requested_by == "alice"
    timer = next(e for e in review.timeline if e.kind is EntryKind.TIMER)
    # The approval timeout was cancelled by the approval, inside the approval step.
    assert timer.status is EntryStatus.CANCELED and timer.step == "approval"
    update = next(e for e in review.timeline if e.kind is EntryKind.UPDATE)
    assert update.name == "approve" and update.status is EntryStatus.COMPLETED
    assert update.step is None


def test_the_monitor_shows_verdict_changes_its_promotion_and_the_acknowledgement() -> None:
    review = read_history(history(MONITOR))
    assert review.status is RunStatus.RUNNING and review.closed_at is None
    assert review.monitor is not None
    changes = [(c.vantage, c.verdict) for c in review.monitor.verdict_changes]
    assert (
        ("dr", "down") in changes and ("obs-a", "down") in changes and ("obs-b", "down") in changes
    )
    assert changes[:3] == [("dr", "healthy"), ("obs-b", "healthy"), ("obs-a", "healthy")]
    (promotion,) = review.monitor.promotions
    assert promotion.workflow_id == "dr-promotion/lab"
    assert promotion.outcome == "promoted" and promotion.rto_s == pytest.approx(6.472741)
    (ack,) = review.monitor.operator_updates
    assert (ack.name, ack.by) == ("ack", "oncall")
    watches = [e for e in review.timeline if e.name == "watch_target"]
    # Each watch is labelled with who watched what: the primary before the promotion, DR after.
    assert watches[0].step == "dr watches lab:primary"
    assert watches[-1].step == "obs-b watches lab:dr"
    assert [e.status for e in watches].count(EntryStatus.CANCELED) == 3
    assert [e.status for e in watches].count(EntryStatus.RUNNING) == 3


def test_a_retried_activity_shows_why_its_earlier_attempt_failed() -> None:
    review = read_history(history(VENUE_ALPHA))
    connect = next(e for e in review.timeline if e.name == "connect_session")
    assert connect.attempts == 2 and connect.status is EntryStatus.COMPLETED
    assert connect.failures == ["attempt 1: venue alpha: reconnect cooldown, retry after 3.00 s"]
    assert review.promotion is None and review.workflow_type == "VenueRecovery"


def _fail_update_dns(doc: Document) -> None:
    """update_dns fails for good on its third attempt and the run is terminated."""
    scheduled, related = activity_events(doc, "update_dns")
    started = next(e for e in related if e["eventType"].endswith("STARTED"))
    completed = next(e for e in related if e["eventType"].endswith("COMPLETED"))
    attributes(started)["attempt"] = 3
    attributes(started)["lastFailure"] = {"message": "Route 53 throttled the change"}
    failed_at = completed["eventTime"]
    del completed["activityTaskCompletedEventAttributes"]
    completed["eventType"] = "EVENT_TYPE_ACTIVITY_TASK_FAILED"
    completed["activityTaskFailedEventAttributes"] = {
        "failure": {
            "message": "hosted zone Z1 not found",
            "applicationFailureInfo": {"type": "NoSuchHostedZone", "nonRetryable": True},
        },
        "scheduledEventId": scheduled["eventId"],
        "startedEventId": started["eventId"],
        "retryState": "RETRY_STATE_NON_RETRYABLE_FAILURE",
    }
    keep = doc["events"].index(completed) + 1
    doc["events"][keep:] = [
        {
            "eventId": str(int(completed["eventId"]) + 1),
            "eventTime": failed_at,
            "eventType": "EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED",
            "workflowExecutionTerminatedEventAttributes": {
                "reason": "abandoned after DNS failure",
                "identity": "carol@desk",
            },
        }
    ]


def test_a_failed_activity_shows_every_failure_message() -> None:
    review = read_history(history(UNPLANNED, _fail_update_dns))
    dns = next(e for e in review.timeline if e.name == "update_dns")
    assert dns.status is EntryStatus.FAILED and dns.attempts == 3
    assert dns.failures == [
        "attempt 2: Route 53 throttled the change",
        "attempt 3: hosted zone Z1 not found",
    ]
    assert review.status is RunStatus.TERMINATED
    assert review.failure == "terminated by carol@desk: abandoned after DNS failure"
    assert review.promotion is None  # a terminated run has no report


def test_a_non_json_payload_is_shown_as_binary_not_guessed_at() -> None:
    def binary_input(doc: Document) -> None:
        start = doc["events"][0]["workflowExecutionStartedEventAttributes"]
        start["input"]["payloads"][0] = {
            "metadata": {"encoding": "YmluYXJ5L3BsYWlu"},  # binary/plain
            "data": "AAEC",
        }

    assert read_history(history(UNPLANNED, binary_input)).input == BINARY_PAYLOAD


def test_a_result_from_an_older_release_still_gives_what_it_has() -> None:
    def old_result(doc: Document) -> None:
        result = result_of(doc)
        del result["lease_to_dns_s"], result["replication_gap"]
        result["rto_s"] = "fast"
        result["venues"][1] = {"venue": "beta"}
        doc["events"][-1]["workflowExecutionCompletedEventAttributes"]["result"]["payloads"][0] = (
            payload(result)
        )

    review = read_history(history(UNPLANNED, old_result))
    summary = review.promotion
    assert summary is not None
    assert summary.rto_s is None and summary.lease_to_dns_s is None
    assert summary.replication_gap is None
    assert [v.venue for v in summary.venues] == ["alpha", "gamma"]
    assert summary.outcome == "promoted" and len(summary.rto_breakdown) == 13
    assert any(note.startswith("result.rto_s: undecodable value 'fast'") for note in review.notes)
    assert any(
        note.startswith("result.venues[1]: not a valid VenueRecoveryReport")
        for note in review.notes
    )


@pytest.mark.parametrize(
    "events",
    [[], [{"eventId": "1", "eventType": "EVENT_TYPE_TIMER_FIRED"}]],
    ids=["empty", "no-start"],
)
def test_a_history_without_its_start_is_refused(events: list[Document]) -> None:
    with pytest.raises(HistoryError, match="dr-promotion/x"):
        read_history(WorkflowHistory.from_json("dr-promotion/x", {"events": events}))


def _operator_traffic(doc: Document) -> None:
    """A rejected approval (the requester approving their own promotion), a signal, and the
    accepted approval's handler failing."""
    accepted = next(e for e in doc["events"] if e["eventType"].endswith("UPDATE_ACCEPTED"))
    completed = next(e for e in doc["events"] if e["eventType"].endswith("UPDATE_COMPLETED"))
    completed["workflowExecutionUpdateCompletedEventAttributes"]["outcome"] = {
        "failure": {"message": "approval arrived after the timeout"}
    }
    position = doc["events"].index(accepted)
    doc["events"][position:position] = [
        {
            "eventId": "9001",
            "eventTime": accepted["eventTime"],
            "eventType": "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED",
            "workflowExecutionUpdateRejectedEventAttributes": {
                "rejectedRequest": {
                    "meta": {"updateId": "u-self", "identity": "4242@alice-laptop"},
                    "input": {
                        "name": "approve",
                        "args": {"payloads": [payload({"approver": "alice"})]},
                    },
                },
                "failure": {"message": "alice requested this promotion and cannot approve it"},
            },
        },
        {
            "eventId": "9002",
            "eventTime": accepted["eventTime"],
            "eventType": "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED",
            "workflowExecutionSignaledEventAttributes": {
                "signalName": "page_ack",
                "input": {"payloads": [payload({"by": "oncall", "comment": "looking"})]},
                "identity": "pager@ops",
            },
        },
    ]


def test_rejected_and_failed_updates_and_signals_are_operator_actions() -> None:
    review = read_history(history(PLANNED, _operator_traffic))
    rejected, signal, approval = review.operator_actions
    assert (rejected.name, rejected.by, rejected.identity, rejected.accepted) == (
        "approve",
        "alice",
        "4242@alice-laptop",
        False,
    )
    assert rejected.failure == "alice requested this promotion and cannot approve it"
    assert (signal.kind, signal.name, signal.by, signal.comment, signal.identity) == (
        "signal",
        "page_ack",
        "oncall",
        "looking",
        "pager@ops",
    )
    assert approval.accepted and approval.failure == "approval arrived after the timeout"
    update = next(e for e in review.timeline if e.kind is EntryKind.UPDATE)
    assert update.status is EntryStatus.FAILED
    assert update.failures == ["approval arrived after the timeout"]
    assert [e.name for e in review.timeline if e.kind is EntryKind.SIGNAL] == ["page_ack"]


def test_a_monitor_that_continued_as_new_names_its_next_run() -> None:
    def continued(doc: Document) -> None:
        last = doc["events"][-1]
        doc["events"].append(
            {
                "eventId": str(int(last["eventId"]) + 1),
                "eventTime": last["eventTime"],
                "eventType": "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW",
                "workflowExecutionContinuedAsNewEventAttributes": {
                    "newExecutionRunId": "01a201a7-next",
                    "workflowType": {"name": "HealthMonitor"},
                },
            }
        )

    review = read_history(history(MONITOR, continued))
    assert review.status is RunStatus.CONTINUED_AS_NEW
    assert review.continued_as_new_run_id == "01a201a7-next"
    assert review.closed_at is not None and review.duration_s is not None
    assert review.result is None and review.monitor is not None
