"""`venues check`: what an operator, and a drill's pre-flight, learn of each venue before trusting
a topology. One read-only pass through each venue's adapter: log on, count open orders, count
fills in a recent window, read the declared capabilities, log out.

The facts are typed here (they cross Temporal as the drill's pre-flight result); the check
itself runs in ``activities/venue_check.py``. A failure is one line a person on call can act
on, built from the venue port's typed errors, never from a wire format and never carrying a
credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, computed_field

from domain.venues import (
    AuthRejected,
    RateLimited,
    ReconnectCooldown,
    StaleEpoch,
    VenueCapability,
    VenueConfigError,
    VenueError,
    VenueUnavailable,
)

# A failure reason is one line; a venue's own text longer than this is cut.
REASON_LIMIT = 300


class VenueCheck(BaseModel):
    """One venue's answer. Counts are None where the check did not get that far."""

    venue: str
    adapter: str
    ok: bool
    # How long until the venue first answered as the account: the logon where the dialect
    # reads inside a session (FIX), else the authenticated open-order read.
    session_s: float | None = None
    open_orders: int | None = None
    fills: int | None = None
    # Reports the venue sent that did not validate: a finding, not a failed check.
    malformed: Annotated[int, Field(ge=0)] = 0
    capabilities: list[VenueCapability] = Field(default_factory=list)
    error: str | None = None


class VenuesCheck(BaseModel):
    system: str
    checked_at: datetime
    fills_minutes: float
    venues: list[VenueCheck]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.venues)

    @property
    def failed(self) -> list[VenueCheck]:
        return [v for v in self.venues if not v.ok]

    def failure_summary(self) -> str:
        """``gamma: unavailable: ...; beta: auth rejected: ...`` (empty when all are ok)."""
        return "; ".join(f"{v.venue}: {v.error}" for v in self.failed)


def failure_reason(exc: BaseException, credential_vars: Sequence[str], timeout_s: float) -> str:
    """One line saying why a venue failed its check, from the port's typed errors.

    ``credential_vars`` are the environment variables the venue's config names: a refused
    credential says which to check (never what they hold)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    detail = _venue_detail(exc)
    if isinstance(exc, ReconnectCooldown):
        return f"reconnect cooldown: retry after {exc.retry_after_s:.1f} s"
    if isinstance(exc, RateLimited):
        return f"rate limited: retry after {exc.retry_after_s:g} s ({detail})"
    if isinstance(exc, AuthRejected):
        check = " and ".join(credential_vars) or "the venue's credentials"
        return _line(f"auth rejected: check {check} ({detail})")
    if isinstance(exc, VenueConfigError):
        return _line(f"configuration: {detail}")
    if isinstance(exc, VenueUnavailable):
        return _line(f"unavailable: {detail}")
    if isinstance(exc, StaleEpoch | VenueError):
        return _line(f"refused: {detail}")
    return _line(f"unexpected {type(exc).__name__}: {exc}")


def _venue_detail(exc: BaseException) -> str:
    # VenueError's text starts "venue NAME: "; the row already names the venue.
    text = str(exc)
    if isinstance(exc, VenueError):
        text = text.removeprefix(f"venue {exc.venue}: ")
    return _line(text)


def _line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= REASON_LIMIT else flat[: REASON_LIMIT - 3] + "..."
