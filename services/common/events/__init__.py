"""Events between services: a transactional outbox, NATS JetStream, and idempotent consumers.

The parts, each written once for every service:

* :mod:`~services.common.events.tables`: the ``outbox`` and ``inbox`` tables every service's
  database has (and the one migration step that makes them).
* :mod:`~services.common.events.store`: what a unit of work writes (an event into the outbox,
  a handled event id into the inbox, both in the use case's transaction) and what the relay
  reads and marks.
* :mod:`~services.common.events.bus`: the per-process runtime on its own thread and event
  loop: the relay that publishes unsent outbox rows to JetStream, and the durable consumer
  that applies events through the service's handlers.
* :mod:`~services.common.events.subjects`: the names (stream, subjects, dead letters), as
  ``protos/cinema/v1/events.proto`` writes them down.
"""
