"""The lab's order-gateway dialect (REST + JSON): ``[[venues]] adapter = "lab"``.

It models a desk-owned order gateway, the one kind of venue that knows our epochs: it refuses
orders of a stale epoch and reports each order's epoch in its own ``epoch`` field.

Two clients share the wire format and its error mapping here, and nowhere else:
- ``LabVenueAdapter`` implements the venue port for the runbooks (sessions, open orders, fills,
  cancels);
- ``LabOrderGateway`` is the order-entry side the lab OMS trades through (a session with
  sequence numbers, orders, heartbeats). The runbooks never place orders.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from adapters.venues import pacing
from domain.book import Order, Side
from domain.topology import LabVenueConfig
from domain.venues import (
    AuthRejected,
    CancelResult,
    ClientOrderId,
    FillReport,
    FillReports,
    MalformedReport,
    OrderReport,
    OrderReports,
    RateLimited,
    ReconnectCooldown,
    SessionInfo,
    StaleEpoch,
    VenueCapability,
    VenueConfigError,
    VenueError,
    VenueUnavailable,
)

# How the runbooks name themselves to a venue: its logs, rate limits and fault plans can tell
# them apart from the OMS sessions of the same account.
USER_AGENT = "failover-runbooks"
# And at most 5,000 ids per cancel; smaller batches keep each call short.
CANCEL_BATCH = 1000

_CANCEL_RESULTS: frozenset[str] = frozenset(
    {"cancelled", "already_filled", "already_cancelled", "unknown"}
)


class SessionInactive(VenueError):
    """The venue ended the order-entry session (timed out or replaced): connect again."""


class LabSession(BaseModel):
    venue: str
    session_id: str
    next_seq: int = 1


class _LabHttp:
    """One venue over HTTP: the credential, the error mapping and the JSON decoding."""

    def __init__(self, config: LabVenueConfig, account: str | None, user_agent: str) -> None:
        self.config = config
        resolved = account or config.account
        if not resolved:
            raise VenueConfigError(
                config.name, "no account: set [[venues]] account or pass the system's name"
            )
        self.account = resolved
        key = os.environ.get(config.api_key_env, "")
        if not key:
            raise VenueConfigError(
                config.name,
                f"credential variable {config.api_key_env} is not set or empty on this worker",
            )
        self._http = httpx.AsyncClient(
            base_url=str(config.url).rstrip("/"),
            headers={"X-Api-Key": key, "User-Agent": user_agent},
            timeout=config.timeout_s,
        )
        self.session: LabSession | None = None

    @property
    def venue(self) -> str:
        return self.config.name

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # Per request (pages, cancel batches): see adapters/venues/pacing.py.
        await pacing.wait_turn(self.venue)
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise VenueUnavailable(
                self.venue, f"{method} {path} failed: {type(exc).__name__}"
            ) from None
        if response.status_code == 429 and path != "/session/connect":
            # A session cooldown is the account's, not the venue's rate: it paces nobody else.
            pacing.hold(self.venue, _retry_after_s(response))
        return response

    def _fail(self, response: httpx.Response, what: str) -> VenueError:
        """The typed error for a refused call."""
        status = response.status_code
        body = _json(response)
        detail = body.get("error") or body.get("detail") or response.text[:200]
        if status == 429:
            retry_after = _retry_after_s(response)
            return RateLimited(
                self.venue, f"{what}: rate limited, retry after {retry_after:.2f} s", retry_after
            )
        if status in (401, 403):
            return AuthRejected(
                self.venue,
                f"{what}: HTTP {status}: {detail}; check the key in {self.config.api_key_env}",
            )
        if status >= 500:
            return VenueUnavailable(self.venue, f"{what}: HTTP {status}: {detail}")
        return VenueError(self.venue, f"{what}: HTTP {status}: {detail}")

    async def _logon(self) -> LabSession:
        response = await self._call("POST", "/session/connect", json={"member": self.account})
        if response.status_code == 429:
            raise ReconnectCooldown(self.venue, _retry_after_s(response))
        if response.status_code != 200:
            raise self._fail(response, "connect")
        body = _json(response)
        try:
            self.session = LabSession(
                venue=self.venue, session_id=body["session_id"], next_seq=body["next_seq"]
            )
        except (KeyError, ValidationError):
            raise VenueError(self.venue, "connect: malformed answer (no session_id)") from None
        return self.session

    async def logout(self, session_id: str | None = None) -> None:
        """End a session cleanly (ours, or one opened earlier by id). Repeating it is harmless:
        the venue answers an already-ended session like a live one, and an unknown one 404."""
        if session_id is None:
            if self.session is None:
                return
            session_id = self.session.session_id
        response = await self._call("POST", "/session/logout", json={"session_id": session_id})
        if response.status_code not in (200, 404):
            raise self._fail(response, "logout")
        if self.session is not None and self.session.session_id == session_id:
            self.session = None

    async def cancel(
        self, client_order_ids: Sequence[ClientOrderId]
    ) -> dict[ClientOrderId, CancelResult]:
        """Cancel by client order id; each id's outcome. Idempotent at the venue."""
        outcomes: dict[ClientOrderId, CancelResult] = {}
        ids = list(dict.fromkeys(client_order_ids))
        for start in range(0, len(ids), CANCEL_BATCH):
            batch = ids[start : start + CANCEL_BATCH]
            response = await self._call("POST", "/orders/cancel", json={"client_order_ids": batch})
            if response.status_code != 200:
                raise self._fail(response, "cancel")
            results = _json(response).get("results", [])
            for result in results if isinstance(results, list) else []:
                if isinstance(result, dict) and result.get("outcome") in _CANCEL_RESULTS:
                    outcomes[ClientOrderId(str(result.get("id")))] = result["outcome"]
        # An id the venue did not answer for is not known to have been cancelled.
        return {i: outcomes.get(i, "unknown") for i in ids}

    async def fill_pages(
        self, since_seq: int = 0, since_time: datetime | None = None
    ) -> FillReports:
        """Every fill after ``since_seq`` and at or after ``since_time``, all pages."""
        raw: list[object] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"since_seq": since_seq, "limit": self.config.page_size}
            if since_time is not None:
                params["since_time"] = since_time.isoformat()
            if cursor is not None:
                params["cursor"] = cursor
            response = await self._call("GET", "/fills", params=params)
            if response.status_code != 200:
                raise self._fail(response, "fills")
            body = _json(response)
            page = body.get("fills", [])
            if not isinstance(page, list):
                raise VenueError(self.venue, "malformed fill report: 'fills' is not a list")
            raw.extend(page)
            next_cursor = body.get("next_cursor")
            if not next_cursor or next_cursor == cursor:
                return fill_reports(self.venue, raw)
            cursor = str(next_cursor)

    async def close(self) -> None:
        await self._http.aclose()


class LabVenueAdapter(_LabHttp):
    """The venue port over the lab dialect: one venue, one account, one runbook step."""

    capabilities: frozenset[VenueCapability] = frozenset({VenueCapability.EPOCH_REFUSAL})

    def __init__(self, config: LabVenueConfig, *, user_agent: str = USER_AGENT) -> None:
        super().__init__(config, None, user_agent)

    async def connect(self) -> SessionInfo:
        session = await self._logon()
        return SessionInfo(venue=self.venue, session_id=session.session_id)

    async def open_orders(self) -> OrderReports:
        raw: list[object] = []
        cursor: str | None = None
        while True:
            # The lab answers in one page today; a cursor, if it ever sends one, is followed.
            params = {"cursor": cursor} if cursor is not None else None
            response = await self._call("GET", "/orders/open", params=params)
            if response.status_code != 200:
                raise self._fail(response, "open orders")
            body = _json(response)
            page = body.get("orders", [])
            if not isinstance(page, list):
                raise VenueError(self.venue, "malformed open-order report: 'orders' is not a list")
            raw.extend(page)
            next_cursor = body.get("next_cursor")
            if not next_cursor or next_cursor == cursor:
                return order_reports(self.venue, raw)
            cursor = str(next_cursor)

    async def fills_since(self, watermark: datetime) -> FillReports:
        return await self.fill_pages(since_time=watermark)

    async def close(self) -> None:
        """Log out cleanly if a session is open, so the next logon needs no cooldown; then
        release the connection. Best effort: a venue that cannot be reached ends it anyway."""
        try:
            await self.logout()
        except VenueError:
            pass
        finally:
            await super().close()


class LabOrderGateway(_LabHttp):
    """Order entry over the lab dialect, for the lab OMS (the runbooks never place orders).

    Not safe for concurrent order entry on one session: sequence numbers are per session."""

    def __init__(self, config: LabVenueConfig, account: str, user_agent: str) -> None:
        super().__init__(config, account, user_agent)

    async def connect(self) -> LabSession:
        return await self._logon()

    async def place_order(
        self, client_order_id: str, epoch: int, symbol: str, side: Side, qty: int, price: Decimal
    ) -> Order:
        """Send one order under the session's next sequence number; the order as the venue
        accepted it, in the book's vocabulary (the lab OMS records it)."""
        if self.session is None:
            raise SessionInactive(self.venue, "no session; connect first")
        seq = self.session.next_seq
        payload = {
            "session_id": self.session.session_id,
            "seq": seq,
            "client_order_id": client_order_id,
            "epoch": epoch,
            "symbol": symbol,
            "side": side.value,
            "qty": qty,
            "price": str(price),
        }
        response = await self._call("POST", "/orders", json=payload)
        body = _json(response)
        if response.status_code == 409 and body.get("error") == "session not active; reconnect":
            self.session = None
            raise SessionInactive(self.venue, "session ended by the venue")
        # The venue consumed the sequence number whether it accepted or rejected the order.
        if response.status_code in (200, 400) or body.get("error") == "stale epoch":
            self.session.next_seq = seq + 1
        if response.status_code == 409 and body.get("error") == "stale epoch":
            raise StaleEpoch(self.venue, epoch, int(body.get("highest_epoch", 0)))
        if response.status_code != 200:
            raise self._fail(response, "order entry")
        reports = order_reports(self.venue, [body])
        if reports.malformed:
            raise VenueError(self.venue, f"order entry: {reports.malformed[0].detail}")
        accepted = reports.orders[0]
        return Order.model_validate({**accepted.model_dump(), "epoch": accepted.epoch or epoch})


# --- the dialect's reports -------------------------------------------------------------------

# A whole payload is validated in one call. Only a payload with a bad report is validated again
# report by report, so that each bad one becomes a MalformedReport naming its own field.
_ORDER_BATCH = TypeAdapter(list[OrderReport])
_FILL_BATCH = TypeAdapter(list[FillReport])


def order_reports(venue: str, raw: Sequence[object]) -> OrderReports:
    """The lab's open-order JSON as typed reports; each one that does not validate is a
    ``MalformedReport`` naming the field. The lab's ``epoch`` field is the report's epoch."""
    entries = [_with_venue(venue, entry) for entry in raw]
    try:
        return OrderReports(orders=_ORDER_BATCH.validate_python(entries))
    except ValidationError:
        pass  # at least one bad report: see _ORDER_BATCH
    orders: list[OrderReport] = []
    malformed: list[MalformedReport] = []
    for entry in entries:
        try:
            orders.append(OrderReport.model_validate(entry))
        except ValidationError as error:
            malformed.append(MalformedReport.from_error(venue, "order", entry, error))
    return OrderReports(orders=orders, malformed=malformed)


def fill_reports(venue: str, raw: Sequence[object]) -> FillReports:
    """The lab's fill JSON as typed reports. The lab calls the venue's sequence ``seq``."""
    entries = [_with_venue(venue, entry, seq="venue_seq") for entry in raw]
    try:
        return FillReports(fills=_FILL_BATCH.validate_python(entries))
    except ValidationError:
        pass
    fills: list[FillReport] = []
    malformed: list[MalformedReport] = []
    for entry in entries:
        try:
            fills.append(FillReport.model_validate(entry))
        except ValidationError as error:
            malformed.append(MalformedReport.from_error(venue, "fill", entry, error))
    return FillReports(fills=fills, malformed=malformed)


def _with_venue(venue: str, entry: object, seq: Literal["venue_seq"] | None = None) -> object:
    # The lab does not name itself in its reports. Anything but an object is passed through
    # for pydantic to reject with its own message.
    if not isinstance(entry, dict):
        return entry
    out = {**entry, "venue": venue}
    if seq is not None and "seq" in out and seq not in out:
        out[seq] = out.pop("seq")
    return out


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after_s(response: httpx.Response) -> float:
    body = _json(response)
    if isinstance(body.get("retry_after_s"), int | float):
        return max(float(body["retry_after_s"]), 0.0)
    header = response.headers.get("Retry-After", "1")
    try:
        return max(float(header), 0.0)
    except ValueError:
        return 1.0
