"""An alert webhook receiver, as a chat or paging service would run one.

The token in the path is the webhook's secret, as with real chat webhooks: a wrong token is a
404, so the receiver does not confirm that the path exists. Repeats of an ``Idempotency-Key``
are acknowledged but stored once, which is what makes the notify activity safe to retry.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

from lab.service import install_latency_chaos

# A lab runs for hours at most; this bounds memory if a monitor pages in a loop.
MAX_STORED_ALERTS = 10_000


class StoredAlert(BaseModel):
    received_at: datetime
    idempotency_key: str | None
    alert: dict[str, Any]


class AlertPage(BaseModel):
    alerts: list[StoredAlert]


class Receipt(BaseModel):
    duplicate: bool


class ReceiverHealth(BaseModel):
    status: str = "ok"
    alerts: int


class AlertLog:
    """Received alerts in arrival order, at most one per idempotency key.

    Only touched from the event loop and never across an ``await``, so no lock is needed.
    """

    def __init__(self, capacity: int = MAX_STORED_ALERTS) -> None:
        self._capacity = capacity
        self._alerts: deque[StoredAlert] = deque(maxlen=capacity)
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str | None, alert: dict[str, Any]) -> bool:
        """Store ``alert``; False if ``key`` was seen before (the alert is then dropped)."""
        if key is not None:
            if key in self._keys:
                return False
            self._keys[key] = None
            if len(self._keys) > self._capacity:
                self._keys.popitem(last=False)
        self._alerts.append(
            StoredAlert(received_at=datetime.now(UTC), idempotency_key=key, alert=alert)
        )
        return True

    def all(self) -> list[StoredAlert]:
        return list(self._alerts)


def create_app(token: str) -> FastAPI:
    if not token:
        raise ValueError("the alert receiver needs a non-empty token")
    app = FastAPI(title="lab alert receiver")
    install_latency_chaos(app)
    log = AlertLog()

    @app.post("/alerts/{path_token}")
    async def receive(
        path_token: str,
        alert: dict[str, Any],
        idempotency_key: str | None = Header(default=None),
    ) -> Receipt:
        if not secrets.compare_digest(path_token.encode(), token.encode()):
            raise HTTPException(status_code=404, detail="Not Found")
        return Receipt(duplicate=not log.add(idempotency_key, alert))

    @app.get("/alerts")
    async def list_alerts() -> AlertPage:
        return AlertPage(alerts=log.all())

    @app.get("/health")
    async def health() -> ReceiverHealth:
        return ReceiverHealth(alerts=len(log.all()))

    return app
