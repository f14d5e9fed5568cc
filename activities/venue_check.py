"""The venues check itself: one implementation behind `drctl venues check` and the Drill's
pre-flight activity (``DrillActivities.check_venues``).

Read-only by construction: it calls only ``connect``, ``open_orders``, ``fills_since`` and
``close`` of the venue port. Every venue is checked at once, each bounded by its own timeout,
and a venue that fails is a row saying why, never an exception: one broken venue must not hide
what the others said.

It logs on only where the dialect reads inside a session and nowhere else (FIX:
``session_bound_reads``). A venue that allows one session per member ends the older session when
the member logs on again, so a logon by the check would cut the member's trading OMS off (and
start a reconnect cooldown); REST dialects prove the credentials with their authenticated reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import UTC, datetime, timedelta

from adapters.venues import DEFAULT_USER_AGENT, declared_capabilities, open_venue
from domain.topology import Topology, VenueConfig
from domain.venue_check import VenueCheck, VenuesCheck, failure_reason
from domain.venues import VenueAdapter

DEFAULT_FILLS_MINUTES = 15.0
# A check makes about this many calls to a venue (logon, open orders, fills and the orders they
# name, logout); each may take the venue's own ``timeout_s``.
CALLS_PER_CHECK = 5
# Venue logs (and fault plans aimed at the runbooks) see the check as runbook traffic.
CHECK_USER_AGENT = f"{DEFAULT_USER_AGENT} venues-check"


def check_timeout_s(config: VenueConfig, override_s: float | None = None) -> float:
    return override_s if override_s is not None else config.timeout_s * CALLS_PER_CHECK


async def check_venues(
    topology: Topology,
    system_name: str,
    *,
    fills_minutes: float = DEFAULT_FILLS_MINUTES,
    timeout_s: float | None = None,
) -> VenuesCheck:
    """Check every venue of ``system_name`` concurrently. Raises KeyError for an unknown
    system; a venue's own failure is its row."""
    system = topology.system(system_name)
    checked_at = datetime.now(UTC)
    since = checked_at - timedelta(minutes=fills_minutes)
    configs = [
        v.model_copy(update={"account": v.account_for(system.name)})
        for v in topology.venues_of(system)
    ]
    rows = await asyncio.gather(
        *(check_venue(c, since, check_timeout_s(c, timeout_s)) for c in configs)
    )
    return VenuesCheck(
        system=system.name, checked_at=checked_at, fills_minutes=fills_minutes, venues=rows
    )


async def check_venue(config: VenueConfig, since: datetime, timeout_s: float) -> VenueCheck:
    row = VenueCheck(venue=config.name, adapter=config.adapter, ok=False)
    credential_vars = _credential_vars(config)
    adapter: VenueAdapter | None = None
    try:
        row.capabilities = sorted(declared_capabilities(config))
        async with asyncio.timeout(timeout_s):
            adapter = open_venue(config, user_agent=CHECK_USER_AGENT)
            started = time.monotonic()
            if config.session_bound_reads:
                # FIX reads only inside a logged-on session: log on first (and out in close).
                await adapter.connect()
                row.session_s = round(time.monotonic() - started, 3)
            orders = await adapter.open_orders()
            if row.session_s is None:
                row.session_s = round(time.monotonic() - started, 3)
            row.open_orders = len(orders.orders)
            fills = await adapter.fills_since(since)
            row.fills = len(fills.fills)
            row.malformed = len(orders.malformed) + len(fills.malformed)
        row.ok = True
    except Exception as exc:  # every failure is this venue's row, never the whole check's
        row.error = _redacted(failure_reason(exc, credential_vars, timeout_s), credential_vars)
    finally:
        if adapter is not None:
            # Log out cleanly (best effort, bounded): the next session must meet no cooldown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(adapter.close(), config.timeout_s)
    return row


def _credential_vars(config: VenueConfig) -> list[str]:
    """The environment variables the config names for its credentials (``*_env`` fields)."""
    return [
        str(value)
        for field, value in config
        if field.endswith("_env") and isinstance(value, str) and value
    ]


def _redacted(text: str, credential_vars: list[str]) -> str:
    # Adapters never put a credential in an error; a venue echoing one back must not leak it.
    for name in credential_vars:
        secret = os.environ.get(name, "")
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
