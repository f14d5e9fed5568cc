"""OpenTelemetry traces of a runbook: one trace, a span per activity and child workflow, no
credential in any span; and export switched on and off by the standard OTEL_* variables."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.worker import Worker

from tests.conftest import DevServer
from tests.integration.telemetry_client import connect_when_ready
from tests.integration.telemetry_workflows import (
    SECRET_ENV,
    RecoverOneVenue,
    TracedPromotion,
    record_venue_recovery_metrics,
    sign_venue_request,
)
from tests.otlp_collector import OtlpCollector, otlp_collector
from workers.telemetry import tracer_provider_from_environment, tracing_interceptors

SECRET = f"venue-key-{uuid.uuid4().hex}"
EXPORT_TIMEOUT_S = 20.0


def everything_said_by(span: ReadableSpan) -> list[str]:
    """Every string a span carries to a collector: name, status, attributes, events, links."""
    said = [span.name, span.status.description or ""]
    attribute_sets = [span.attributes or {}, span.resource.attributes]
    attribute_sets += [event.attributes or {} for event in span.events]
    attribute_sets += [link.attributes or {} for link in span.links]
    said += [event.name for event in span.events]
    for attributes in attribute_sets:
        for key, value in attributes.items():
            said += [str(key), str(value)]
    return said


@pytest.fixture(scope="module")
async def promotion_spans(dev_server: DevServer) -> tuple[list[ReadableSpan], list[str]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = await connect_when_ready(dev_server, interceptors=tracing_interceptors(provider))
    queue = f"tracing-{uuid.uuid4()}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SECRET_ENV, SECRET)
        # The worker inherits the client's interceptors: it is given none of its own.
        async with Worker(
            traced,
            task_queue=queue,
            workflows=[TracedPromotion, RecoverOneVenue],
            activities=[sign_venue_request, record_venue_recovery_metrics],
        ):
            result = await traced.execute_workflow(
                TracedPromotion.run, "nyse", id=f"traced-{uuid.uuid4()}", task_queue=queue
            )
    provider.shutdown()
    return list(exporter.get_finished_spans()), result


async def test_one_trace_per_promotion(
    promotion_spans: tuple[list[ReadableSpan], list[str]],
) -> None:
    spans, _ = promotion_spans
    assert spans
    traces = {span.context.trace_id for span in spans if span.context is not None}
    assert len(traces) == 1, f"{len(traces)} traces: {sorted(s.name for s in spans)}"


async def test_a_span_per_activity_and_child_workflow(
    promotion_spans: tuple[list[ReadableSpan], list[str]],
) -> None:
    spans, result = promotion_spans
    names = [span.name for span in spans]
    assert names.count("RunActivity:sign_venue_request") == 2  # the parent's and the child's
    assert names.count("RunActivity:record_venue_recovery_metrics") == 1
    assert names.count("StartChildWorkflow:RecoverOneVenue") == 1
    assert names.count("RunWorkflow:RecoverOneVenue") == 1
    assert "StartWorkflow:TracedPromotion" in names
    # The activities really ran (with the key in their environment) and said so.
    assert result[0] == f"nyse signed with a key of {len(SECRET)} characters"


async def test_no_credential_in_any_span(
    promotion_spans: tuple[list[ReadableSpan], list[str]],
) -> None:
    spans, _ = promotion_spans
    leaks = [span.name for span in spans if any(SECRET in s for s in everything_said_by(span))]
    assert not leaks, f"spans carrying the venue key: {leaks}"


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without any OTEL_* variable; the test sets the ones it needs."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_tracing_is_off_without_otel_variables(otel_env: pytest.MonkeyPatch) -> None:
    assert tracing_interceptors() == []
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing_interceptors() == []
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    otel_env.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert len(tracing_interceptors()) == 1
    otel_env.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing_interceptors() == []


def test_an_unavailable_exporter_is_refused_with_the_variable_to_fix(
    otel_env: pytest.MonkeyPatch,
) -> None:
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracer_provider_from_environment()
    otel_env.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        tracer_provider_from_environment()


@pytest.fixture
def collector() -> Iterator[OtlpCollector]:
    with otlp_collector() as server:
        yield server


async def test_otlp_endpoint_variable_exports_spans_there(
    collector: OtlpCollector, otel_env: pytest.MonkeyPatch
) -> None:
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    otel_env.setenv("OTEL_SERVICE_NAME", "dr-east")
    provider = tracer_provider_from_environment()
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span("promote alpha"):
        pass
    assert await asyncio.to_thread(provider.force_flush, int(EXPORT_TIMEOUT_S * 1000))
    provider.shutdown()
    assert collector.received.is_set()
    [request] = collector.requests
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "dr-east"
    assert [s.name for scope in resource_spans.scope_spans for s in scope.spans] == [
        "promote alpha"
    ]
