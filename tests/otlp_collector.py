"""An OTLP/HTTP trace receiver for tests: what a desk's collector would receive, kept in memory.

Real exporters (a lab worker's, drctl's) post protobuf to ``/v1/traces``; the spans are kept
decoded, and every string a span carries can be read back for the secrets scan."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from lab import processes


class OtlpCollector(ThreadingHTTPServer):
    """Keeps the body of every POST to /v1/traces."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.received = threading.Event()
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", processes.free_port()), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def keep(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests.append(request)
        self.received.set()

    def spans(self) -> list[tuple[dict[str, str], Span]]:
        """(resource attributes, span) for every span received so far."""
        with self._lock:
            requests = list(self.requests)
        return [
            ({a.key: _text(a.value) for a in resource.resource.attributes}, span)
            for request in requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


class _Handler(BaseHTTPRequestHandler):
    server: OtlpCollector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            self.server.keep(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def otlp_collector() -> Iterator[OtlpCollector]:
    server = OtlpCollector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def attributes_of(span: Span) -> dict[str, str]:
    return {a.key: _text(a.value) for a in span.attributes}


def everything_said_by(span: Span) -> list[str]:
    """Every string a span carries to a collector: name, status, attributes, events, links."""
    said = [span.name, span.status.message]
    pairs: list[KeyValue] = [*span.attributes]
    for event in span.events:
        said.append(event.name)
        pairs += event.attributes
    for link in span.links:
        pairs += link.attributes
    for pair in pairs:
        said += [pair.key, _text(pair.value)]
    return said


def _text(value: AnyValue) -> str:
    return str(getattr(value, value.WhichOneof("value") or "string_value"))
