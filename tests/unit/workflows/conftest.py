"""The time-skipping test server, with the search attributes every runbook sets for review."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from domain.promotion import DR_SEARCH_ATTRIBUTES
from lab.processes import find_binary


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    # The test server knows no search attributes until told.
    await environment.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=environment.client.namespace,
            search_attributes={
                name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in DR_SEARCH_ATTRIBUTES
            },
        )
    )
    try:
        yield environment
    finally:
        await environment.shutdown()
