"""Venue activities for VenueRecovery: a fresh session, what is open, what filled, cancels.

Cancels are idempotent at the venue. A reconnect cooldown (429 + Retry-After) becomes a
retry after exactly that delay, so the venue sees one refused attempt, not a storm.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.venue_client import (
    RateLimited,
    ReconnectCooldown,
    VenueClient,
    VenueError,
    VenueSession,
)
from domain.promotion import CancelOutcome, VenueSessionGrant
from domain.topology import Topology

COOLDOWN_ERROR = "ReconnectCooldown"
RATE_LIMITED_ERROR = "RateLimited"
CANCEL_BATCH = 1000


class SessionRequest(BaseModel):
    venue: str
    member: str


class LogoutRequest(BaseModel):
    venue: str
    member: str
    session_id: str


class CancelRequest(BaseModel):
    venue: str
    member: str
    client_order_ids: list[str]


def venue_failure(exc: VenueError) -> ApplicationError:
    """A venue call that failed, for Temporal to retry: after Retry-After when the venue gave
    one (a cooldown or a 429), so it sees one refused attempt per window, not a storm."""
    if isinstance(exc, RateLimited):
        return ApplicationError(
            str(exc),
            type=COOLDOWN_ERROR if isinstance(exc, ReconnectCooldown) else RATE_LIMITED_ERROR,
            next_retry_delay=timedelta(seconds=max(exc.retry_after_s, 0.05)),
        )
    return ApplicationError(str(exc))


class VenueActivities:
    def __init__(self, topology: Topology) -> None:
        self._topology = topology

    def _client(self, venue: str, member: str) -> VenueClient:
        try:
            config = self._topology.venue(venue)
        except KeyError as exc:
            raise ApplicationError(str(exc.args[0]), non_retryable=True) from None
        try:
            return VenueClient(config, member=member)
        except VenueError as exc:
            # A missing credential on this worker: retrying here cannot fix it.
            raise ApplicationError(str(exc), non_retryable=True) from None

    @activity.defn(name="connect_session")
    async def connect_session(self, request: SessionRequest) -> VenueSessionGrant:
        client = self._client(request.venue, request.member)
        try:
            session = await client.connect()
        except VenueError as exc:
            raise venue_failure(exc) from None
        finally:
            await client.close()
        return VenueSessionGrant(
            venue=request.venue,
            session_id=session.session_id,
            waited_for_cooldown=activity.info().attempt > 1,
            attempt=activity.info().attempt,
        )

    @activity.defn(name="logout_session")
    async def logout_session(self, request: LogoutRequest) -> None:
        """A clean logout, so the OMS that trades next connects without a cooldown."""
        client = self._client(request.venue, request.member)
        client.session = VenueSession(venue=request.venue, session_id=request.session_id)
        try:
            await client.logout()
        except VenueError as exc:
            raise venue_failure(exc) from None
        finally:
            await client.close()

    @activity.defn(name="cancel_orders")
    async def cancel_orders(self, request: CancelRequest) -> CancelOutcome:
        client = self._client(request.venue, request.member)
        outcomes: dict[str, str] = {}
        try:
            # The venue takes at most 5,000 ids per call; smaller batches keep each call short.
            for start in range(0, len(request.client_order_ids), CANCEL_BATCH):
                batch = request.client_order_ids[start : start + CANCEL_BATCH]
                outcomes |= await client.cancel(batch)
        except VenueError as exc:
            raise venue_failure(exc) from None
        finally:
            await client.close()
        return CancelOutcome(
            venue=request.venue, outcomes=outcomes, attempt=activity.info().attempt
        )
