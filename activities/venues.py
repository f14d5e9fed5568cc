"""Venue activities for VenueRecovery: a fresh session, cancels, and the one place a venue's
typed errors become Temporal's retry decisions.

Every activity goes through the venue port (``adapters.venues.open_venue``), whatever the
venue's dialect, and closes the adapter it opened (a clean logout) whatever happens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated

from pydantic import AliasChoices, BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.metrics import VenueWait, record_venue_wait
from adapters.venues import open_venue
from adapters.venues.lab import LabVenueAdapter
from domain.promotion import CancelOutcome, VenueSessionGrant
from domain.topology import Topology
from domain.venues import (
    AuthRejected,
    ClientOrderId,
    RateLimited,
    ReconnectCooldown,
    VenueAdapter,
    VenueConfigError,
    VenueError,
)

COOLDOWN_ERROR = "ReconnectCooldown"
RATE_LIMITED_ERROR = "RateLimited"

# Who we are at the venue. Runs recorded before per-venue accounts called it ``member`` (and
# sent the system's name): both spellings decode, so those histories still replay.
Account = Annotated[str, Field(validation_alias=AliasChoices("account", "member"))]


class SessionRequest(BaseModel):
    venue: str
    account: Account


class LogoutRequest(BaseModel):
    venue: str
    account: Account
    session_id: str


class CancelRequest(BaseModel):
    venue: str
    account: Account
    client_order_ids: list[str]


def venue_failure(exc: VenueError) -> ApplicationError:
    """A venue call that failed, as Temporal's retry decision. The one mapping:

    - the venue asked us to wait (a reconnect cooldown, a 429): retry after exactly that
      delay, so it sees one refused attempt per window, not a storm;
    - refused credentials or a configuration this worker cannot use: retrying cannot fix
      it, so fail for good with a message the on-call person can act on;
    - anything else (unreachable, 5xx, a dropped connection): the step's retry policy backs off.
    """
    if isinstance(exc, RateLimited):
        if activity.in_activity():
            # The wait the venue imposes, as it is honoured: the retry waits exactly this.
            cooldown = isinstance(exc, ReconnectCooldown)
            kind = VenueWait.COOLDOWN if cooldown else VenueWait.RETRY_AFTER
            record_venue_wait(activity.metric_meter(), exc.venue, kind, exc.retry_after_s)
        return ApplicationError(
            str(exc),
            type=COOLDOWN_ERROR if isinstance(exc, ReconnectCooldown) else RATE_LIMITED_ERROR,
            next_retry_delay=timedelta(seconds=exc.retry_after_s),
        )
    if isinstance(exc, AuthRejected):
        return ApplicationError(
            f"{exc}; the venue refused our credentials: fix them on the worker, then retry "
            "the step",
            type=type(exc).__name__,
            non_retryable=True,
        )
    if isinstance(exc, VenueConfigError):
        return ApplicationError(
            f"{exc}; fix the topology or this worker's environment, then retry the step",
            type=type(exc).__name__,
            non_retryable=True,
        )
    return ApplicationError(str(exc), type=type(exc).__name__)


@asynccontextmanager
async def venue_adapter(
    topology: Topology, venue: str, account: str
) -> AsyncIterator[VenueAdapter]:
    """The adapter for ``venue`` acting as ``account``, closed (logged out) on the way out;
    every venue error raised inside is turned into its retry decision."""
    try:
        config = topology.venue(venue)
    except KeyError as exc:
        raise ApplicationError(
            f"{exc.args[0]}; the topology this worker loaded does not know the venue",
            type="UnknownVenue",
            non_retryable=True,
        ) from None
    try:
        adapter = open_venue(config.model_copy(update={"account": account}))
    except VenueError as exc:
        raise venue_failure(exc) from None
    try:
        yield adapter
    except VenueError as exc:
        raise venue_failure(exc) from None
    finally:
        await adapter.close()


class VenueActivities:
    def __init__(self, topology: Topology) -> None:
        self._topology = topology

    @activity.defn(name="connect_session")
    async def connect_session(self, request: SessionRequest) -> VenueSessionGrant:
        """A fresh session for the account, waiting out the venue's reconnect cooldown through
        retries; closed cleanly at once, so the DR OMS that trades next logs on without one.
        The grant records that the venue accepted us, and after how many attempts."""
        async with venue_adapter(self._topology, request.venue, request.account) as venue:
            session = await venue.connect()
        attempt = activity.info().attempt
        return VenueSessionGrant(
            venue=request.venue,
            session_id=session.session_id,
            waited_for_cooldown=attempt > 1,
            attempt=attempt,
        )

    @activity.defn(name="logout_session")
    async def logout_session(self, request: LogoutRequest) -> None:
        """End the session ``connect_session`` granted. ``connect_session`` now closes its own
        session, so this only matters for runs whose session was opened by an older worker
        (the lab dialect logs it out by id; repeating a logout is harmless). Kept so their
        histories replay."""
        async with venue_adapter(self._topology, request.venue, request.account) as venue:
            lab = getattr(venue, "unwrapped", venue)
            if isinstance(lab, LabVenueAdapter):
                await lab.logout(request.session_id)

    @activity.defn(name="cancel_orders")
    async def cancel_orders(self, request: CancelRequest) -> CancelOutcome:
        """Cancel by client order id. Idempotent at the venue: a retried batch converges."""
        async with venue_adapter(self._topology, request.venue, request.account) as venue:
            outcomes = await venue.cancel([ClientOrderId(i) for i in request.client_order_ids])
        return CancelOutcome(
            venue=request.venue,
            outcomes={str(i): outcome for i, outcome in outcomes.items()},
            attempt=activity.info().attempt,
        )
