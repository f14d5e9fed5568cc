"""The venue as its members see it: sessions in front of the book, and what it counts."""

from __future__ import annotations

import time

from lab.venue.book import OrderBook
from lab.venue.config import VenueSettings
from lab.venue.models import Counters, OrderRequest, SequenceError
from lab.venue.rejections import VenueRejection
from lab.venue.sessions import RecordedReply, SessionTable, VenueSession


class SimulatedVenue:
    def __init__(self, settings: VenueSettings) -> None:
        self.counters = Counters()
        self.book = OrderBook(settings.name, self.counters)
        self.sessions = SessionTable(settings.reconnect_cooldown_s, settings.session_timeout_s)
        # Monotonic, so that a wall-clock step cannot time sessions out or end cooldowns.
        self._clock = time.monotonic

    def connect(self, member: str) -> VenueSession:
        self.counters.connect_attempts += 1
        try:
            return self.sessions.connect(member, self._clock())
        except VenueRejection:
            self.counters.connects_refused_cooldown += 1
            raise

    def logout(self, session_id: str) -> VenueSession:
        return self.sessions.logout(session_id, self._clock())

    def heartbeat(self, session_id: str) -> VenueSession:
        now = self._clock()
        session = self.sessions.active_session(session_id, now)
        session.touch(now)
        return session

    def submit_order(self, request: OrderRequest) -> RecordedReply:
        """Sequence an order on its session, then hand it to the book.

        Every sequence number the venue processes gets exactly one answer, accepted or not, and
        a resend of the same order under the same number gets that answer again; a client that
        lost a response can therefore resend without risking a second order.
        """
        now = self._clock()
        session = self.sessions.active_session(request.session_id, now)
        session.touch(now)
        if request.seq > session.expected_seq:
            raise VenueRejection(
                409, SequenceError(error="sequence gap", expected_seq=session.expected_seq)
            )
        if request.seq < session.expected_seq:
            earlier = session.replies[request.seq]
            if earlier.client_order_id == request.client_order_id:
                return earlier
            raise VenueRejection(
                409, SequenceError(error="sequence already used", expected_seq=session.expected_seq)
            )
        try:
            order = self.book.enter(request)
        except VenueRejection as rejection:
            reply = RecordedReply(
                request.client_order_id, rejection.status_code, rejection.body_json()
            )
        else:
            reply = RecordedReply(request.client_order_id, 200, order.model_dump(mode="json"))
        session.replies[request.seq] = reply
        session.expected_seq += 1
        return reply
