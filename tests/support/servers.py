"""Real Cinema servers inside the test process (grpcio's threads), bound to 127.0.0.1 on an
ephemeral port. Tests talk to them with the generated sync stubs."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.server import CinemaServer, token_verifier
from services.common.settings import Settings


@dataclass
class RunningService:
    """One started service: its address, and how to stop it."""

    service: str
    port: int
    server: CinemaServer
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def channel(self) -> grpc.Channel:
        channel = grpc.insecure_channel(self.address)
        self.channels.append(channel)
        return channel

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        self.server.stop()


def service_settings(service: str, database_url: str, env: Mapping[str, str]) -> Settings:
    return Settings.from_env(service, {**env, "DATABASE_URL": database_url})


def start_service(
    service: str, settings: Settings, *, grace_seconds: float = 5.0
) -> RunningService:
    """Build the service from its composition root and serve it on 127.0.0.1:0."""
    root = importlib.import_module(f"services.{service}.__main__")
    spec = root.build(settings)
    verifier = token_verifier(settings)
    server = CinemaServer(
        spec,
        verifier,
        host="127.0.0.1",
        port=0,
        grace_seconds=grace_seconds,
        health_interval=0.5,
        worker_threads=settings.worker_threads,
    )
    server.start()
    running = RunningService(service, server.port, server)
    wait_serving(running.address, spec.full_name)
    return running


@dataclass(frozen=True)
class Shop:
    """The four services, each on its own database, wired to each other's addresses."""

    cast: RunningService
    movie: RunningService
    user: RunningService
    order: RunningService

    @property
    def started(self) -> list[RunningService]:
        """In the order they start: each one's peers come before it."""
        return [self.cast, self.movie, self.user, self.order]


@contextlib.contextmanager
def start_shop(
    env: Mapping[str, str],
    databases: Callable[[str], str],
    *,
    admin_email: str,
    admin_password: str,
) -> Iterator[Shop]:
    """Start cast, movie, user and order (peers first), stop them on the way out.

    ``env`` is every service's environment (the signing keys); ``databases`` gives each
    service its database URL; the user service creates the first admin from
    ``admin_email`` and ``admin_password``.
    """
    started: list[RunningService] = []

    def start(service: str, extra: Mapping[str, str]) -> RunningService:
        settings = service_settings(service, databases(service), {**env, **extra})
        started.append(start_service(service, settings))
        return started[-1]

    try:
        cast = start("cast", {})
        movie = start("movie", {"CAST_SERVICE_ADDR": cast.address})
        user = start(
            "user", {"CINEMA_ADMIN_EMAIL": admin_email, "CINEMA_ADMIN_PASSWORD": admin_password}
        )
        order = start(
            "order", {"MOVIE_SERVICE_ADDR": movie.address, "USER_SERVICE_ADDR": user.address}
        )
        yield Shop(cast, movie, user, order)
    finally:
        for service in reversed(started):
            service.stop()


def wait_serving(address: str, service_name: str = "", timeout: float = 30.0) -> None:
    """Block until grpc.health.v1 says SERVING for ``service_name`` at ``address``."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service_name), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service_name or address} not SERVING after {timeout}s")
            time.sleep(0.1)
