"""Upstream formats, one module each; :func:`make_format` picks one by ``[[upstream]] type``."""

from __future__ import annotations

from appliance.forward.formats.base import Format, FormatContext
from appliance.forward.formats.elastic_bulk import ElasticBulkFormat
from appliance.forward.formats.otlp_logs import OtlpLogsFormat
from appliance.forward.formats.splunk_hec import SplunkHecFormat
from appliance.forward.formats.webhook import WebhookFormat

FORMATS: dict[str, type] = {
    "webhook": WebhookFormat,
    "splunk_hec": SplunkHecFormat,
    "elastic_bulk": ElasticBulkFormat,
    "otlp_logs": OtlpLogsFormat,
}


def make_format(ctx: FormatContext) -> Format:
    fmt: Format = FORMATS[ctx.config.type](ctx)
    return fmt
