"""Member sessions: sequence numbers, the one-session-per-member rule and reconnect cooldowns.

Times here are ``time.monotonic()`` seconds: a session's lifetime must not jump when the wall
clock does. Timeouts are noticed lazily, on the next request that looks at the session, and are
dated to the moment the session actually went quiet, so no timer task is needed.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from lab.venue.models import CooldownError, ErrorBody
from lab.venue.rejections import VenueRejection, session_not_active


class SessionEnd(StrEnum):
    LOGGED_OUT = "logged_out"  # clean: the member may reconnect at once
    REPLACED = "replaced"  # unclean: the member connected again while this one was open
    TIMED_OUT = "timed_out"  # unclean: no connect, order or heartbeat for session_timeout_s
    DISCONNECTED = "disconnected"  # unclean: a FIX connection closed without a Logout


@dataclass(frozen=True)
class RecordedReply:
    """What the venue answered to one sequence number, kept so a resend gets the same answer."""

    client_order_id: str
    status_code: int
    # Serialized when first answered: a resend must see the order as it was then, not now.
    body: dict[str, Any]


@dataclass
class VenueSession:
    session_id: str
    member: str
    timeout_s: float
    last_activity: float
    expected_seq: int = 1
    end: SessionEnd | None = None
    ended_at: float | None = None
    replies: dict[int, RecordedReply] = field(default_factory=dict)

    def active(self, now: float) -> bool:
        """Whether the session is open at ``now``; records a timeout the first time it is seen."""
        if self.end is None and now - self.last_activity >= self.timeout_s:
            self.close(SessionEnd.TIMED_OUT, self.last_activity + self.timeout_s)
        return self.end is None

    def touch(self, now: float) -> None:
        self.last_activity = now

    def close(self, end: SessionEnd, at: float) -> None:
        self.end = end
        self.ended_at = at


class SessionTable:
    def __init__(self, reconnect_cooldown_s: float, session_timeout_s: float) -> None:
        self._cooldown_s = reconnect_cooldown_s
        self._timeout_s = session_timeout_s
        self._by_id: dict[str, VenueSession] = {}
        # Only a member's latest session matters for the cooldown: a newer one can only have
        # been opened after the older one's cooldown was over.
        self._latest_by_member: dict[str, VenueSession] = {}

    def connect(self, member: str, now: float) -> VenueSession:
        """Open a new session for ``member``, or raise a 429 while its cooldown runs.

        Connecting while a session is still open ends that session uncleanly, as a real venue
        does when a second logon arrives, and so starts the cooldown this very connect hits.
        """
        previous = self._latest_by_member.get(member)
        if previous is not None:
            if previous.active(now):
                previous.close(SessionEnd.REPLACED, now)
            remaining = self._cooldown_remaining(previous, now)
            if remaining > 0:
                raise VenueRejection(
                    429,
                    CooldownError(error="reconnect cooldown", retry_after_s=remaining),
                    headers={"Retry-After": str(math.ceil(remaining))},
                )
        session = VenueSession(
            session_id=uuid.uuid4().hex, member=member, timeout_s=self._timeout_s, last_activity=now
        )
        self._by_id[session.session_id] = session
        self._latest_by_member[member] = session
        return session

    def logout(self, session_id: str, now: float) -> VenueSession:
        """End a session cleanly. Repeating it is harmless.

        A session that already ended uncleanly (timed out or replaced) stays unclean: logging
        out afterwards cannot cancel a cooldown that has already started.
        """
        session = self._by_id.get(session_id)
        if session is None:
            raise VenueRejection(
                404, ErrorBody(error=f"unknown session {session_id}; connect to get a session")
            )
        if session.active(now):
            session.close(SessionEnd.LOGGED_OUT, now)
        return session

    def active_session(self, session_id: str, now: float) -> VenueSession:
        session = self._by_id.get(session_id)
        if session is None or not session.active(now):
            raise session_not_active()
        return session

    def _cooldown_remaining(self, previous: VenueSession, now: float) -> float:
        if previous.end is SessionEnd.LOGGED_OUT or previous.ended_at is None:
            return 0.0
        return previous.ended_at + self._cooldown_s - now
