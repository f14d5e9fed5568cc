"""The one data converter of the project: every client and worker uses ``DATA_CONVERTER``.

Payloads are pydantic JSON (``temporalio.contrib.pydantic``), so workflow inputs typed into the
Temporal UI map onto our models. Failures keep their Python stack trace, which helps whoever
debugs a runbook, except a bad input: the operator who typed it fixes it from the message, and
the UI would otherwise show them a page of SDK frames under it.
"""

from __future__ import annotations

import dataclasses

from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverter, PayloadConverter
from temporalio.exceptions import ApplicationError

from workflows.steps import INVALID_INPUT


class OperatorFailureConverter(DefaultFailureConverter):
    """The SDK's failure converter, without the stack trace of an input the operator got wrong."""

    def to_failure(
        self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure
    ) -> None:
        super().to_failure(exception, payload_converter, failure)
        if isinstance(exception, ApplicationError) and exception.type == INVALID_INPUT:
            failure.stack_trace = ""


DATA_CONVERTER: DataConverter = dataclasses.replace(
    pydantic_data_converter, failure_converter_class=OperatorFailureConverter
)
