"""A client of the module's dev server with the telemetry under test (a Prometheus runtime,
tracing interceptors), connected once the server answers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from temporalio.client import Client, Interceptor
from temporalio.runtime import Runtime

from tests.conftest import TEMPORAL_START_TIMEOUT_S, DevServer
from workflows.data_converter import DATA_CONVERTER


async def connect_when_ready(
    server: DevServer,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    deadline = asyncio.get_running_loop().time() + TEMPORAL_START_TIMEOUT_S
    while True:
        try:
            client = await Client.connect(
                server.address,
                runtime=runtime,
                interceptors=interceptors,
                data_converter=DATA_CONVERTER,
            )
            # The port opens before the default namespace exists: wait until it answers.
            await client.count_workflows()
            return client
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)  # poll
