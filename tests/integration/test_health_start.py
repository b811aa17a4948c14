"""A starting service reports SERVING soon after it is ready, not a health interval later:
the checks before the first SERVING come quickly (services/common/server.py)."""

from __future__ import annotations

import time

from services.common.server import CinemaServer, ServiceSpec, token_verifier
from tests.support.servers import service_settings, wait_serving
from tests.support.tokens import SigningKeys

READY_AFTER = 0.3
INTERVAL = 2.0


def test_serving_follows_readiness_within_a_fraction_of_the_interval(
    keys: SigningKeys,
) -> None:
    started = time.monotonic()
    pings: list[float] = []

    def database_ping() -> bool:
        pings.append(time.monotonic() - started)
        return pings[-1] >= READY_AFTER

    spec = ServiceSpec(
        full_name="cinema.v1.MovieService",
        register=lambda server: None,
        database_ping=database_ping,
    )
    settings = service_settings("movie", "sqlite://", keys.env())
    server = CinemaServer(spec, token_verifier(settings), health_interval=INTERVAL)
    server.start()
    try:
        wait_serving(f"127.0.0.1:{server.port}", "cinema.v1.MovieService", timeout=10)
        serving_after = time.monotonic() - started
    finally:
        server.stop()
    assert pings[0] < READY_AFTER, pings  # the first check found it not ready
    # Not a whole interval late: SERVING within a few checks of readiness.
    assert serving_after < READY_AFTER + INTERVAL / 2, (serving_after, pings)
