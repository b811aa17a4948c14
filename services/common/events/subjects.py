"""The names events travel under, as ``protos/cinema/v1/events.proto`` writes them down.

An event's subject is its message's full name (``cinema.v1.CastDeleted``); the stream
``CINEMA_EVENTS`` holds them all. A consumer's dead letters go to
``cinema.dead_letter.<consumer>.<subject>`` in ``CINEMA_DEAD_LETTERS``.
"""

from __future__ import annotations

from google.protobuf.message import Message

from cinema.v1 import events_pb2

STREAM = "CINEMA_EVENTS"
STREAM_SUBJECTS = ("cinema.v1.*",)
DEAD_LETTER_STREAM = "CINEMA_DEAD_LETTERS"
DEAD_LETTER_PREFIX = "cinema.dead_letter"

#: How long the stream keeps an event (a consumer that was away longer misses it), and the
#: window in which JetStream drops a second message with the same ``Nats-Msg-Id``.
STREAM_MAX_AGE_SECONDS = 7 * 24 * 3600
DUPLICATE_WINDOW_SECONDS = 120
DEAD_LETTER_MAX_AGE_SECONDS = 30 * 24 * 3600

#: Every event message, by subject.
EVENT_TYPES: dict[str, type[Message]] = {
    descriptor.full_name: getattr(events_pb2, name)
    for name, descriptor in events_pb2.DESCRIPTOR.message_types_by_name.items()
    if "event_id" in descriptor.fields_by_name
}


def subject_of(event: Message | type[Message]) -> str:
    """The subject an event is published on: its message's full name."""
    return event.DESCRIPTOR.full_name


def dead_letter_subject(consumer: str, subject: str) -> str:
    return f"{DEAD_LETTER_PREFIX}.{consumer}.{subject}"
