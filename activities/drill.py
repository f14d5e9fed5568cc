"""What a drill does to the world: resolve its plan, check every venue before anything is
broken on purpose, and inject or heal a real lab fault.

Faults go through the lab's control API (``[lab]`` in the topology), so a drill breaks the lab
exactly as `drctl lab chaos` does: the process is really killed, the monitor really has to see it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Literal

import httpx
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import venue_check
from domain.drill import DrillPlan, FaultRecord, blackout_at
from domain.topology import Topology
from domain.venue_check import VenuesCheck


class DrillPlanRequest(BaseModel):
    system: str


class LabFaultRequest(BaseModel):
    action: Literal["kill", "heal"]
    # A chaos target of the lab: "primary" or "dr" (the OMS of that region).
    target: Literal["primary", "dr"]


class VenuesCheckRequest(BaseModel):
    system: str
    fills_minutes: float = venue_check.DEFAULT_FILLS_MINUTES


class DrillActivities:
    def __init__(self, topology: Topology) -> None:
        self._topology = topology

    @activity.defn(name="load_drill_plan")
    async def load_drill_plan(self, request: DrillPlanRequest) -> DrillPlan:
        try:
            system = self._topology.system(request.system)
        except KeyError as exc:
            raise ApplicationError(str(exc.args[0]), non_retryable=True) from None
        window = blackout_at(datetime.now(UTC), system.drill)
        return DrillPlan(
            system=system.name,
            production=system.production,
            primary_region=system.primary_region,
            dr_region=system.dr_region,
            primary_oms_url=str(system.primary_oms_url),
            dr_oms_url=str(system.dr_oms_url),
            lab_control=self._topology.lab is not None,
            blackout=f"{window.describe()} {system.drill.timezone}" if window else None,
            approval_timeout_s=system.approval_timeout_s,
            ui_url=str(self._topology.temporal.ui_url),
        )

    @activity.defn(name="check_venues")
    async def check_venues(self, request: VenuesCheckRequest) -> VenuesCheck:
        """The drill's pre-flight: the very check `drctl venues check` runs, read-only. A venue
        that fails it is a row of the result, not a failed activity: the drill decides."""
        try:
            return await venue_check.check_venues(
                self._topology, request.system, fills_minutes=request.fills_minutes
            )
        except KeyError as exc:
            raise ApplicationError(str(exc.args[0]), non_retryable=True) from None

    @activity.defn(name="lab_fault")
    async def lab_fault(self, request: LabFaultRequest) -> FaultRecord:
        """Idempotent: killing a dead process or healing a healthy one changes nothing."""
        lab = self._topology.lab
        if lab is None:
            raise ApplicationError(
                "this topology has no [lab] control API: a real fault can only be injected "
                "into the lab; use the planned-switchover scenario",
                non_retryable=True,
            )
        key = os.environ.get(lab.api_key_env, "")
        if not key:
            raise ApplicationError(
                f"{lab.api_key_env} is not set in the worker's environment", non_retryable=True
            )
        url = str(lab.control_url).rstrip("/") + "/chaos"
        # A heal restarts a process and waits until it answers: give it time.
        async with httpx.AsyncClient(timeout=90) as http:
            try:
                response = await http.post(
                    url,
                    json={"action": request.action, "target": request.target},
                    headers={"X-Api-Key": key},
                )
            except httpx.HTTPError as exc:
                raise ApplicationError(
                    f"lab control API at {lab.control_url} did not answer: {type(exc).__name__}"
                ) from None
        if response.status_code in (401, 422):
            detail = _detail(response)
            raise ApplicationError(
                f"lab control API refused {request.action} {request.target}: {detail}",
                non_retryable=True,
            )
        if response.status_code != 200:
            raise ApplicationError(
                f"lab control API answered HTTP {response.status_code} to {request.action} "
                f"{request.target}"
            )
        body = response.json()
        return FaultRecord(
            action=request.action,
            target=request.target,
            at=datetime.fromisoformat(body["at"]),
            detail=str(body["detail"]),
        )


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
