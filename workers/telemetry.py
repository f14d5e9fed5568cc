"""A worker's telemetry: Prometheus ``/metrics`` and OpenTelemetry traces.

Metrics: one Temporal ``Runtime`` per process serves the SDK's own metrics and ours (recorded
through the SDK's metric meter, activities/metrics.py) on one Prometheus endpoint. It must exist
before the client connects: a client's runtime is fixed when it is created.

Traces: ``temporalio.contrib.opentelemetry.TracingInterceptor`` on the client, which every
worker built from that client inherits (passing it to a Worker as well would trace every
activity twice). Export is configured only by the standard ``OTEL_*`` environment variables;
with none set there is no interceptor and no exporter, so an untraced worker pays nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import temporalio.client
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from activities.metrics import HISTOGRAM_BUCKETS

DEFAULT_SERVICE_NAME = "failover-runbooks-worker"
TRACER_NAME = "failover-runbooks"


def metrics_runtime(bind_address: str) -> Runtime:
    """A runtime serving ``http://<bind_address>/metrics``. Pass it to ``Client.connect``.

    Counters end in ``_total`` and durations are float seconds, as Prometheus names them; the
    SDK's own metrics keep its ``temporal_`` prefix, ours their ``failover_`` one.
    """
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=bind_address,
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides={
                    name: list(buckets) for name, buckets in HISTOGRAM_BUCKETS.items()
                },
            )
        )
    )


def tracer_provider_from_environment() -> TracerProvider | None:
    """A tracer provider exporting as the ``OTEL_*`` variables say, or None when tracing is off.

    On when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``) or an OTLP
    endpoint is set (then ``otlp``, the specification's default). Off when neither is set, when
    ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true``. The OTLP exporter reads its
    endpoint, headers and timeout from the same variables itself, which is why this reads
    ``os.environ`` and nothing else.
    """
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    named = [e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    exporters = [e for e in named if e]
    if not exporters and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        exporters = ["otlp"]
    exporters = [e for e in exporters if e != "none"]
    if not exporters:
        return None
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", DEFAULT_SERVICE_NAME)})
    )
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_span_exporter(name, env)))
    return provider


def _span_exporter(name: str, env: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={name!r} is not supported here; use otlp, console or none"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol.strip() != "http/protobuf":
        raise ValueError(
            f"OTLP protocol {protocol!r} is not installed; set OTEL_EXPORTER_OTLP_PROTOCOL="
            "http/protobuf and point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port "
            "(4318)"
        )
    # Imported here: it pulls in protobuf and requests, which an untraced worker never needs.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def tracing_interceptors(
    tracer_provider: TracerProvider | None = None,
) -> list[temporalio.client.Interceptor]:
    """The interceptors for ``Client.connect(interceptors=...)``: empty when tracing is off.

    ``tracer_provider`` defaults to the one the environment configures; tests pass their own.
    """
    provider = tracer_provider or tracer_provider_from_environment()
    if provider is None:
        return []
    return [TracingInterceptor(provider.get_tracer(TRACER_NAME))]
