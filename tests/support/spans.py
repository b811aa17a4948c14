"""An OpenTelemetry SDK pipeline that keeps every span it ends, for the unit tests of
Cinema's span and encoder (tests/unit/test_otlp_spans.py, tests/unit/test_served_spans.py)."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON


class KeepSpans(SpanExporter):
    """Keeps what it is handed, in order."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def keeping_provider(
    resource: Resource, keep: KeepSpans, limits: SpanLimits | None = None
) -> TracerProvider:
    """A provider that samples everything and hands each ended span to ``keep`` at once."""
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(keep))
    return provider
