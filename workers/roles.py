"""What each worker role polls, runs, and needs.

Two kinds of task queue exist, and the runbooks decide which work lands on which:

- ``region-<region>`` (``domain.promotion.region_task_queue``): the runbooks themselves and every
  step they take from the region they act in. A promotion runs on its target region's queue, a
  failback promotes onto the primary's, so both regions' workers run the same runbooks. These
  workers need the topology, the lease store (the promotion takes the lease) and a Temporal
  client (the drill drives the monitor and approves its own promotion through it).
- ``vantage-<name>`` (``VantagePoint.task_queue``): only the monitors' probe watches, which must
  run *from* that place. A vantage worker needs nothing but the network path it probes over: no
  topology beyond its name, and never the lease store, so it keeps probing while the store is
  down.

``all`` (the lab) polls every queue of the topology from one process, each queue with exactly
what its own role would register.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.alerts import AlertActivities
from activities.database import DatabaseActivities
from activities.dns import DnsActivities
from activities.drill import DrillActivities
from activities.feeds import FeedActivities
from activities.lease_activities import LeaseActivities
from activities.oms import OmsActivities
from activities.plan import PlanActivities
from activities.probes import ProbeActivities
from activities.readiness import ReadinessActivities
from activities.reconcile import ReconcileActivities
from activities.runbook_control import RunbookControlActivities
from activities.venues import VenueActivities
from domain.promotion import region_task_queue
from domain.topology import Topology
from workers.heartbeats import HeartbeatWhileRunning
from workflows.registry import REGION_WORKFLOWS

# A workflow's next task goes to the worker that ran its last one (its cache) for this long,
# then to any worker. The SDK's 10 s default is 10 s of promotion lost when that worker dies.
STICKY_TIMEOUT = timedelta(seconds=2)

ALL = "all"


@dataclass(frozen=True)
class Queues:
    """The task queues one process polls, sorted by what runs on them."""

    regions: list[str]
    vantages: list[str]

    @property
    def needs_lease_store(self) -> bool:
        return bool(self.regions)

    @property
    def every(self) -> list[str]:
        return [*self.regions, *self.vantages]


def role_name(words: Sequence[str]) -> str:
    """``["vantage", "dr-1"]`` and ``["vantage-dr-1"]`` are the same role."""
    return "-".join(words)


def queues_of(topology: Topology, role: str) -> Queues:
    """The queues ``role`` polls; an unknown role is refused with the ones this topology has."""
    regions = sorted(
        {region_task_queue(s.primary_region) for s in topology.systems}
        | {region_task_queue(s.dr_region) for s in topology.systems}
    )
    vantages = sorted({v.task_queue for v in topology.vantage_points})
    if role == ALL:
        return Queues(regions=regions, vantages=vantages)
    if role in regions:
        return Queues(regions=[role], vantages=[])
    if role in vantages:
        return Queues(regions=[], vantages=[role])
    known = [*regions, *(f"vantage {q.removeprefix('vantage-')}" for q in vantages)]
    raise ValueError(f"unknown role {role!r}; this topology's roles are: all, {', '.join(known)}")


def vantage_activities() -> list[Callable[..., Any]]:
    """A vantage point only watches targets for the monitors."""
    return [ProbeActivities().watch_target]


def region_activities(
    topology: Topology, lease: LeaseActivities, client: Client
) -> list[Callable[..., Any]]:
    """Every step a runbook takes from the region it acts in (see the module docstring)."""
    oms = OmsActivities()
    plan = PlanActivities(topology, oms)
    venues = VenueActivities(topology)
    reconcile = ReconcileActivities(topology, oms)
    feeds = FeedActivities(topology)
    dns = DnsActivities(topology)
    alerts = AlertActivities(topology)
    drills = DrillActivities(topology)
    database = DatabaseActivities(topology)
    readiness = ReadinessActivities(topology)
    control = RunbookControlActivities(client)
    return [
        plan.load_promotion_plan,
        plan.load_monitor_plan,
        plan.load_feed_plan,
        plan.verify_positions,
        feeds.switch_feed_source,
        lease.read_lease,
        lease.acquire_lease,
        oms.confirm_primary_down,
        oms.fence_primary,
        oms.sync_dr_state,
        oms.activate_dr,
        oms.release_trading,
        oms.fetch_dr_book,
        venues.connect_session,
        venues.logout_session,
        venues.cancel_orders,
        reconcile.reconcile_venue,
        reconcile.still_open,
        dns.update_dns,
        alerts.notify,
        drills.load_drill_plan,
        drills.check_venues,
        drills.lab_fault,
        control.monitor_control,
        control.await_promotion,
        control.approve_promotion,
        database.check_db_replica,
        database.fence_db_primary,
        database.promote_db_replica,
        database.load_db_state,
        database.reseed_old_primary,
        database.await_db_caught_up,
        readiness.watch_dr_readiness,
    ]


def _worker(
    client: Client, queue: str, workflows: Sequence[type], activities: Sequence[Callable[..., Any]]
) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=workflows,
        activities=activities,
        interceptors=[HeartbeatWhileRunning()],
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
    )


def vantage_workers(client: Client, queues: Queues) -> list[Worker]:
    """Probe watches only. Nothing here touches the lease store or the topology's services."""
    activities = vantage_activities()
    return [_worker(client, queue, [], activities) for queue in queues.vantages]


def region_workers(
    client: Client, queues: Queues, topology: Topology, lease: LeaseActivities | None
) -> list[Worker]:
    if not queues.regions:
        return []
    if lease is None:
        raise ValueError(f"{', '.join(queues.regions)} take the lease: open the lease store first")
    activities = region_activities(topology, lease, client)
    return [_worker(client, queue, REGION_WORKFLOWS, activities) for queue in queues.regions]
