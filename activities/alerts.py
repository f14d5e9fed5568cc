"""Alert activities: tell the humans, through every webhook the topology configures.

A webhook URL is a secret (chat and paging webhooks carry their token in the path), so the
topology names only the variable that holds it and nothing here ever logs or reports the URL.
That is also why requests go straight to an httpx transport rather than through
``httpx.AsyncClient``: the client logs every request's full URL at INFO level.

Retries are safe: every POST carries the alert's idempotency key, and receivers drop repeats.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from domain.topology import AlertWebhook, Topology

DEFAULT_WEBHOOK_TIMEOUT_S = 10.0

AlertKind = Literal[
    "promotion_started",
    "promotion_completed",
    "promotion_failed",
    "approval_needed",
    "decision_needed",
    "drill_result",
    "monitor",
    "info",
]
Severity = Literal["info", "warning", "critical"]


class Alert(BaseModel):
    system: str
    kind: AlertKind
    severity: Severity
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    # Sent as the Idempotency-Key header, so printable ASCII only (no header injection).
    # The workflow builds it from ids it owns, e.g. f"{workflow_id}/{run_id}/{step}".
    idempotency_key: str = Field(min_length=1, max_length=1024, pattern=r"^[ -~]+$")
    workflow_id: str | None = None
    ui_url: str | None = None


class NotifyResult(BaseModel):
    delivered: list[str]
    skipped: list[str]


class _Undelivered(Exception):
    """One webhook failed; the message names the webhook and never its URL."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class AlertActivities:
    def __init__(self, topology: Topology, timeout_s: float = DEFAULT_WEBHOOK_TIMEOUT_S) -> None:
        self._webhooks = topology.alerts
        self._timeout_s = timeout_s

    @activity.defn(name="notify")
    async def notify(self, alert: Alert) -> NotifyResult:
        """POST ``alert`` to every configured webhook.

        A webhook whose variable is unset is skipped with a warning (a missing chat channel must
        not block a promotion). Delivery is attempted to every webhook before failing, so that
        one broken receiver does not keep the others silent; the error is retryable unless every
        failure is one a retry cannot fix (a 4xx answer, a malformed URL).
        """
        delivered: list[str] = []
        skipped: list[str] = []
        failures: list[_Undelivered] = []
        body = alert.model_dump(mode="json")
        async with httpx.AsyncHTTPTransport() as transport:
            for webhook in self._webhooks:
                url = os.environ.get(webhook.url_env)
                if not url:
                    activity.logger.warning(
                        "alert webhook %s skipped: %s is not set in this worker's environment",
                        webhook.name,
                        webhook.url_env,
                    )
                    skipped.append(webhook.name)
                    continue
                try:
                    await self._post(transport, webhook, url, body, alert.idempotency_key)
                except _Undelivered as failure:
                    activity.logger.warning("%s", failure)
                    failures.append(failure)
                else:
                    delivered.append(webhook.name)
        if failures:
            raise ApplicationError(
                f"alert {alert.kind} for {alert.system} not delivered: "
                + "; ".join(str(f) for f in failures)
                + (f" (delivered to {delivered})" if delivered else ""),
                type="AlertNotDelivered",
                non_retryable=not any(f.retryable for f in failures),
            )
        return NotifyResult(delivered=delivered, skipped=skipped)

    async def _post(
        self,
        transport: httpx.AsyncHTTPTransport,
        webhook: AlertWebhook,
        url: str,
        body: dict[str, Any],
        idempotency_key: str,
    ) -> None:
        where = f"webhook {webhook.name} (URL from {webhook.url_env})"
        try:
            request = httpx.Request(
                "POST",
                url,
                json=body,
                headers={"Idempotency-Key": idempotency_key},
                extensions={"timeout": httpx.Timeout(self._timeout_s).as_dict()},
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            # The exception text can quote the URL, so it is dropped, not chained.
            raise _Undelivered(f"{where}: not a valid http(s) URL", retryable=False) from None
        try:
            # httpx's timeouts are per read; this bounds a receiver that answers byte by byte.
            async with asyncio.timeout(self._timeout_s * 2):
                response = await transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise _Undelivered(f"{where}: not a valid http(s) URL", retryable=False) from None
        except (httpx.TransportError, TimeoutError) as exc:
            raise _Undelivered(
                f"{where}: unreachable ({type(exc).__name__})", retryable=True
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        # 408 and 429 are the receiver asking us to come back later.
        retryable = status >= 500 or status in (408, 429)
        raise _Undelivered(f"{where}: answered HTTP {status}", retryable=retryable)
