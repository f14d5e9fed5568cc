"""Market-data source failover: which ranked source a feed should use, given what is seen.

Pure: the monitor feeds it per-vantage verdicts for every source; it answers with the source the
consumers should follow. Two rules, both against flapping:
- leave the active source only when a majority of vantage points see it DOWN, and then for the
  best-ranked source a majority sees HEALTHY;
- return to a better-ranked source only once a majority has seen it HEALTHY for the whole
  recovery window, without a break.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.health import Verdict


def active_source_key(feed: str) -> str:
    """Where a feed's active source is published; consumers watch this key."""
    return f"md/{feed}/active"


class ActiveSource(BaseModel):
    """The value written under ``md/<feed>/active`` by the monitor, read by every consumer."""

    model_config = ConfigDict(frozen=True)

    feed: str
    source: str = Field(min_length=1)
    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    switched_at: AwareDatetime
    reason: str


class SourceSwitch(BaseModel):
    at: AwareDatetime
    from_source: str
    to_source: str
    reason: str


class FeedState(BaseModel):
    """All a feed monitor remembers; continue-as-new hands it over whole."""

    active: str
    # verdicts[source][vantage]
    verdicts: dict[str, dict[str, Verdict]] = Field(default_factory=dict)
    # When a majority last started seeing each source HEALTHY without a break (None: not now).
    healthy_since: dict[str, AwareDatetime | None] = Field(default_factory=dict)
    switches: Annotated[list[SourceSwitch], Field(max_length=50)] = Field(default_factory=list)
    # Maintenance: keep watching, never switch.
    paused_by: str | None = None


class FeedPolicy(BaseModel):
    ranked_sources: list[str] = Field(min_length=2)
    vantages: list[str] = Field(min_length=1)
    recovery_window_s: float = Field(gt=0)

    @property
    def quorum(self) -> int:
        return len(self.vantages) // 2 + 1


def source_verdict(state: FeedState, source: str, policy: FeedPolicy) -> Verdict:
    """What a majority of vantage points see for ``source`` (UNKNOWN without a majority)."""
    seen = state.verdicts.get(source, {})
    for verdict in (Verdict.DOWN, Verdict.HEALTHY, Verdict.DEGRADED):
        if sum(1 for v in policy.vantages if seen.get(v) == verdict) >= policy.quorum:
            return verdict
    return Verdict.UNKNOWN


def record_verdict(
    state: FeedState,
    source: str,
    vantage: str,
    verdict: Verdict,
    at: datetime,
    policy: FeedPolicy,
) -> FeedState:
    """A new state with one vantage point's verdict on one source recorded."""
    if source not in policy.ranked_sources:
        raise ValueError(f"unknown source {source!r}; ranked sources are {policy.ranked_sources}")
    if vantage not in policy.vantages:
        raise ValueError(f"unknown vantage point {vantage!r}; known are {policy.vantages}")
    verdicts = {s: dict(v) for s, v in state.verdicts.items()}
    verdicts.setdefault(source, {})[vantage] = verdict
    new = state.model_copy(update={"verdicts": verdicts})
    healthy_now = source_verdict(new, source, policy) is Verdict.HEALTHY
    since = dict(state.healthy_since)
    if not healthy_now:
        since[source] = None
    elif since.get(source) is None:
        since[source] = at
    return new.model_copy(update={"healthy_since": since})


def choose_source(state: FeedState, at: datetime, policy: FeedPolicy) -> SourceSwitch | None:
    """The switch to make now, if any (never while paused)."""
    if state.paused_by is not None:
        return None
    ranked = policy.ranked_sources
    active = state.active
    if source_verdict(state, active, policy) is Verdict.DOWN:
        for candidate in ranked:
            if candidate != active and source_verdict(state, candidate, policy) is Verdict.HEALTHY:
                return SourceSwitch(
                    at=at,
                    from_source=active,
                    to_source=candidate,
                    reason=f"a majority of vantage points see {active} down",
                )
        return None  # nothing healthy to go to: staying is the least bad choice
    for candidate in ranked[: ranked.index(active)]:
        since = state.healthy_since.get(candidate)
        if since is not None and (at - since).total_seconds() >= policy.recovery_window_s:
            return SourceSwitch(
                at=at,
                from_source=active,
                to_source=candidate,
                reason=(
                    f"{candidate} (better ranked) healthy for "
                    f"{(at - since).total_seconds():.0f} s, the recovery window"
                ),
            )
    return None


def apply_switch(state: FeedState, switch: SourceSwitch) -> FeedState:
    return state.model_copy(
        update={"active": switch.to_source, "switches": [*state.switches, switch][-50:]}
    )


def next_recovery_check(state: FeedState, at: datetime, policy: FeedPolicy) -> float | None:
    """Seconds until a better-ranked source completes its recovery window (None: no timer)."""
    ranked = policy.ranked_sources
    waits = [
        policy.recovery_window_s - (at - since).total_seconds()
        for candidate in ranked[: ranked.index(state.active)]
        if (since := state.healthy_since.get(candidate)) is not None
    ]
    return max(min(waits), 0.0) if waits else None
