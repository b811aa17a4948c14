"""Conversions between protobuf well-known types and Python values, shared by servicers."""

from __future__ import annotations

import datetime as dt

from google.protobuf import message, timestamp_pb2


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def populated_fields(resource: message.Message) -> list[str]:
    """Names of the fields set in ``resource``: the implied update mask of AIP-134."""
    return [descriptor.name for descriptor, _ in resource.ListFields()]
