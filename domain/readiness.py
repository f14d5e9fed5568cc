"""DR readiness: could the standby side take over now without losing more than allowed?

The SystemMonitor watches, from the standby region, how far it is behind: the position stream
(events stored that its OMS has not applied, and the age of the oldest of them) and, when the
system has a database, the replica's replay lag (judged against ``max_lag_on_failover_*``, the
same maxima the promotion's gate uses). One bad measurement is noise; ``intervals`` bad ones in
a row make the standby NOT READY, and as many good ones in a row make it ready again, so the
"DR not ready" alert is raised once and cleared once.

Pure: the watch activity measures, these functions judge and debounce.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.database import ReplicaLag, lag_beyond_maximum


class ReadinessThresholds(BaseModel):
    """From the topology: ``health.dr_ready_*`` and the database's ``max_lag_on_failover_*``."""

    model_config = ConfigDict(frozen=True)

    max_stream_lag_events: int = Field(ge=0)
    max_stream_lag_s: float = Field(gt=0)
    intervals: int = Field(ge=1)
    # None: the system has no [systems.database]; only the stream is judged.
    db_max_lag_bytes: int | None = None
    db_max_lag_s: float | None = None


class ReadinessSample(BaseModel):
    """One measurement from the standby side. A figure that could not be measured is None and
    the reason is among ``problems`` (unmeasurable counts as not ready)."""

    measured_at: datetime
    stream_lag_events: int | None = None
    stream_lag_s: float | None = None
    db_lag_bytes: int | None = None
    db_lag_s: float | None = None
    problems: list[str] = Field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


class ReadinessCounters(BaseModel):
    """What a readiness watch remembers between checks, and across a retry (heartbeat)."""

    ready: bool | None = None
    consecutive_bad: int = 0
    consecutive_good: int = 0
    last: ReadinessSample | None = None


class DrReadiness(BaseModel):
    """The monitor's view of its standby, kept in its state (continue-as-new carries it)."""

    region: str
    ready: bool
    since: AwareDatetime
    # Why it is not ready (None when ready).
    reason: str | None = None
    last: ReadinessSample | None = None
    # "DR not ready" was alerted for this episode; the matching "ready again" clears it.
    alerted: bool = False

    def describe(self) -> str:
        if self.ready:
            return f"{self.region} ready since {self.since.isoformat()}"
        return f"{self.region} not ready since {self.since.isoformat()}: {self.reason}"


def stream_problem(
    lag_events: int | None, lag_s: float | None, thresholds: ReadinessThresholds
) -> str | None:
    if lag_events is None:
        return None  # the measurement's own problem says why
    reasons = []
    if lag_events > thresholds.max_stream_lag_events:
        reasons.append(
            f"stream {lag_events} event(s) behind (maximum {thresholds.max_stream_lag_events})"
        )
    if lag_s is not None and lag_s > thresholds.max_stream_lag_s:
        reasons.append(f"stream {lag_s:.1f} s behind (maximum {thresholds.max_stream_lag_s:g} s)")
    return "; ".join(reasons) or None


def database_problem(lag: ReplicaLag, thresholds: ReadinessThresholds) -> str | None:
    if thresholds.db_max_lag_bytes is None or thresholds.db_max_lag_s is None:
        return None
    if not lag.replica_in_recovery:
        return "the standby database is not a replica (it was promoted); re-seed it"
    if lag.replay_paused:
        return "database replay is paused on the replica"
    beyond = lag_beyond_maximum(lag, thresholds.db_max_lag_bytes, thresholds.db_max_lag_s)
    return f"database {beyond}" if beyond else None


def count(counters: ReadinessCounters, sample: ReadinessSample) -> ReadinessCounters:
    """Add one measurement to the streaks."""
    good = sample.ready
    return counters.model_copy(
        update={
            "consecutive_good": counters.consecutive_good + 1 if good else 0,
            "consecutive_bad": 0 if good else counters.consecutive_bad + 1,
            "last": sample,
        }
    )


def next_ready(counters: ReadinessCounters, intervals: int) -> bool | None:
    """Debounced readiness: NOT READY after ``intervals`` bad checks in a row, ready again after
    as many good ones; a first good check of an unknown standby counts (a new monitor does not
    wait to call a healthy standby ready). None: not known yet."""
    if counters.consecutive_bad >= intervals:
        return False
    if counters.ready is None:
        return True if counters.consecutive_good >= 1 else None
    if counters.ready is False:
        return counters.consecutive_good >= intervals
    return True


def problem_summary(sample: ReadinessSample | None) -> str:
    if sample is None or not sample.problems:
        return "no measurement"
    return "; ".join(sample.problems)
