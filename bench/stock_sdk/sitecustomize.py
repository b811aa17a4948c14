"""Put the OpenTelemetry SDK's own served-call spans and span encoder back, for
``bench.telemetry``'s ``metrics + traces 100 %, stock SDK`` variant only (it puts this
directory first on that process's ``PYTHONPATH``; nothing else does).

Cinema starts a recorded served call's span itself (services/common/served_spans.py) and
writes the OTLP bytes itself (services/common/otlp_spans.py). This variant is the stock
SDK doing both, measured in the same run, so the chart shows what the two save.
"""

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from services.common import otlp_spans, tracing


def _sdk_translate(self, data):  # type: ignore[no-untyped-def]
    return encode_spans(data)


otlp_spans.OTLPSpanExporter._translate_data = _sdk_translate  # type: ignore[method-assign]
tracing.served_spans = lambda: None  # the interceptor then starts the SDK's span
