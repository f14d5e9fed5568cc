"""The venue contract: every adapter, through the registry, against its lab counterpart.

One scenario per test, named for what the runbook sees. Every adapter runs every scenario;
a scenario that needs an optional capability runs where the adapter declares it (and the suite
checks that the adapter declares exactly what its face says).

Adding an adapter = one line in ``FACES``: its name (``[[venues]] adapter = ...``), the
context manager in faces.py that starts its lab face and builds its config, and the optional
capabilities the adapter must declare.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from adapters.venues import open_venue
from domain.venues import (
    ClientOrderId,
    MalformedReport,
    RateLimited,
    ReconnectCooldown,
    SessionInfo,
    StaleEpoch,
    VenueAdapter,
    VenueCapability,
)
from tests.contract.faces import (
    COOLDOWN_S,
    FaceFactory,
    VenueFace,
    ccxt_face,
    fix44_face,
    gather_limited,
    lab_face,
)

FACES: list[tuple[str, FaceFactory, frozenset[VenueCapability]]] = [
    ("lab", lab_face, frozenset({VenueCapability.EPOCH_REFUSAL})),
    ("fix44", fix44_face, frozenset({VenueCapability.MASS_STATUS, VenueCapability.MASS_CANCEL})),
    ("ccxt", ccxt_face, frozenset()),
]


def declaring(capability: VenueCapability) -> list[str]:
    return [name for name, _, capabilities in FACES if capability in capabilities]


@pytest.fixture(scope="module", params=[name for name, _, _ in FACES])
def face(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VenueFace]:
    factory = {name: factory for name, factory, _ in FACES}[request.param]
    with factory(tmp_path_factory.mktemp(f"venue-{request.param}")) as running:
        yield running


@pytest.fixture
async def healthy(face: VenueFace, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VenueFace]:
    """The face with its credentials in this worker's environment and no fault planned."""
    for name, value in face.env.items():
        monkeypatch.setenv(name, value)
    await face.venue.set_faults({})
    yield face
    await face.venue.set_faults({})


def account() -> str:
    # A fresh account per scenario: sessions and cooldowns are per account.
    return f"acct-{uuid.uuid4().hex[:8]}"


def adapter_for(face: VenueFace, as_account: str | None = None) -> VenueAdapter:
    return open_venue(face.config(as_account or account()), user_agent="contract-suite")


async def test_the_adapter_declares_the_capabilities_the_suite_expects(
    healthy: VenueFace, request: pytest.FixtureRequest
) -> None:
    expected = {name: capabilities for name, _, capabilities in FACES}
    venue = adapter_for(healthy)
    try:
        assert venue.capabilities == expected[request.node.callspec.params["face"]]
        assert venue.venue == healthy.venue.name
    finally:
        await venue.close()


async def _connect_honouring_cooldowns(
    venue: VenueAdapter, first_wait_s: float, deadline_s: float
) -> SessionInfo:
    """Connect, asking only when each cooldown the venue stated has passed; the first ask
    after the first wait must be granted."""
    deadline = time.monotonic() + deadline_s
    wait, asks = first_wait_s, 0
    while time.monotonic() < deadline:
        await asyncio.sleep(wait)  # poll: the delay the venue itself asked for
        asks += 1
        try:
            session = await venue.connect()
        except ReconnectCooldown as again:
            wait = again.retry_after_s
            continue
        assert asks == 1, f"granted only at ask {asks}: the first delay was not enough"
        return session
    raise AssertionError(f"no session within {deadline_s:g} s")


async def test_a_fresh_session_after_an_unclean_disconnect_waits_out_the_cooldown(
    healthy: VenueFace,
) -> None:
    who = account()
    await healthy.leave_session_open(who)
    venue = adapter_for(healthy, who)
    if not healthy.sessions:
        # A stateless dialect has no session to end uncleanly: the member's session elsewhere
        # costs it nothing, and its waits come as 429 / 418 with Retry-After instead.
        try:
            assert (await venue.connect()).session_id
        finally:
            await venue.close()
        return
    try:
        with pytest.raises(ReconnectCooldown) as refused:
            await venue.connect()
        cooldown = refused.value.retry_after_s
        # The venue asks for (about) its whole cooldown: the unclean end was just now.
        assert 0.5 * COOLDOWN_S <= cooldown <= COOLDOWN_S + 0.5, cooldown
        # Asking again after exactly the delay the venue gave gets the session (what the
        # activity's next_retry_delay does): asked once more, never sooner, within a deadline.
        session = await _connect_honouring_cooldowns(venue, cooldown, COOLDOWN_S + 10)
        assert session.session_id
    finally:
        await venue.close()
    # close() logged out cleanly: the next session needs no cooldown at all.
    again = adapter_for(healthy, who)
    try:
        assert (await again.connect()).session_id != session.session_id
    finally:
        await again.close()


async def test_a_429_with_retry_after_is_rate_limited_for_exactly_that_delay(
    healthy: VenueFace,
) -> None:
    await healthy.rate_limit_next_call(0.75)
    venue = adapter_for(healthy)
    try:
        with pytest.raises(RateLimited) as limited:
            await venue.open_orders()
        assert not isinstance(limited.value, ReconnectCooldown)
        assert limited.value.retry_after_s == pytest.approx(0.75)
        # The burst is over: the same call now goes through.
        await venue.open_orders()
    finally:
        await venue.close()


async def test_open_orders_and_fills_are_read_across_every_page(healthy: VenueFace) -> None:
    count = healthy.page_size + 1
    tag = uuid.uuid4().hex[:8]
    since = datetime.now(UTC) - timedelta(seconds=1)
    ids = [f"E2-page-{tag}-{i}" for i in range(count)]
    await gather_limited([healthy.venue.inject_order(i) for i in ids])
    filled = f"E2-fills-{tag}"
    await healthy.venue.inject_order(filled, qty=count + 1)
    async with healthy.venue.admin() as http:
        answers = await gather_limited(
            [http.post("/admin/fills", json={"client_order_id": filled, "qty": 1}) for _ in ids]
        )
    assert all(a.status_code == 200 for a in answers)
    venue = adapter_for(healthy)
    try:
        orders = await venue.open_orders()
        fills = await venue.fills_since(since)
    finally:
        await venue.close()
    seen = [
        o.client_order_id for o in orders.orders if o.client_order_id.startswith(f"E2-page-{tag}")
    ]
    assert sorted(seen) == sorted(ids)  # each exactly once
    trades = [f.trade_id for f in fills.fills if f.client_order_id == filled]
    assert len(trades) == count and len(set(trades)) == count
    assert orders.malformed == [] and fills.malformed == []


async def test_cancelling_twice_cancels_once_then_says_already_cancelled(
    healthy: VenueFace,
) -> None:
    cid = ClientOrderId(f"E2-cancel-{uuid.uuid4().hex[:8]}")
    await healthy.venue.inject_order(cid)
    venue = adapter_for(healthy)
    try:
        assert await venue.cancel([cid]) == {cid: "cancelled"}
        assert await venue.cancel([cid]) == {cid: "already_cancelled"}
        assert cid not in {o.client_order_id for o in (await venue.open_orders()).orders}
    finally:
        await venue.close()


async def test_cancelling_an_id_the_venue_never_saw_is_unknown_not_an_error(
    healthy: VenueFace,
) -> None:
    cid = ClientOrderId(f"E2-never-{uuid.uuid4().hex[:8]}")
    venue = adapter_for(healthy)
    try:
        assert await venue.cancel([cid]) == {cid: "unknown"}
    finally:
        await venue.close()


@pytest.mark.parametrize("face", declaring(VenueCapability.EPOCH_REFUSAL), indirect=True)
async def test_an_order_of_a_stale_epoch_is_refused_where_the_venue_knows_epochs(
    healthy: VenueFace,
) -> None:
    assert healthy.place_order is not None, "a face declaring epoch_refusal must place orders"
    who = account()
    accepted = await healthy.place_order(who, 900)
    assert accepted.epoch == 900
    with pytest.raises(StaleEpoch) as refused:
        await healthy.place_order(who, 899)
    assert (refused.value.epoch, refused.value.highest) == (899, 900)


async def test_a_malformed_report_is_returned_beside_the_good_ones_never_raised(
    healthy: VenueFace,
) -> None:
    good = ClientOrderId(f"E2-good-{uuid.uuid4().hex[:8]}")
    await healthy.venue.inject_order(good)
    order_ref = await healthy.malformed_order()
    venue = adapter_for(healthy)
    try:
        orders = await venue.open_orders()
        fill_ref = await healthy.malformed_fill()
        fills = await venue.fills_since(datetime.now(UTC) - timedelta(minutes=5))
    finally:
        await venue.close()
    assert good in {o.client_order_id for o in orders.orders}
    bad_order = _only([m for m in orders.malformed if m.reference == order_ref])
    assert bad_order.kind == "order" and "qty" in bad_order.detail
    bad_fill = _only([m for m in fills.malformed if m.reference == fill_ref])
    assert bad_fill.kind == "fill" and bad_fill.detail


def _only(reports: list[MalformedReport]) -> MalformedReport:
    assert len(reports) == 1, reports
    return reports[0]
