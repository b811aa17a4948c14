"""Server bootstrap shared by every service: interceptors, health, reflection, graceful
shutdown.

Health answers for ``""`` and the service's own name. It turns SERVING only once the
database answers, follows the database afterwards, and goes NOT_SERVING when shutdown
begins; then in-flight calls get ``grace_seconds`` to finish before the process exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.auth import TokenVerifier
from services.common.interceptors import AuthorizationInterceptor, ErrorMappingInterceptor

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServiceSpec:
    """What the bootstrap needs from one service's composition root."""

    full_name: str  # e.g. "cinema.v1.MovieService"
    register: Callable[[grpc.aio.Server], None]
    database_ping: Callable[[], bool]
    close: Callable[[], None] = field(default=lambda: None)


class CinemaServer:
    """A started grpc.aio server for one service, with its health servicer."""

    def __init__(
        self,
        spec: ServiceSpec,
        verifier: TokenVerifier,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        grace_seconds: float = 10.0,
        health_interval: float = 2.0,
        worker_threads: int = 4,
        reuse_port: bool = False,
    ) -> None:
        self.spec = spec
        self.grace_seconds = grace_seconds
        self.health_interval = health_interval
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=worker_threads, thread_name_prefix="use-case"
        )
        # grpc-stubs does not know the asyncio health servicer; grpcio-health-checking ships it.
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self.server = grpc.aio.server(
            interceptors=[ErrorMappingInterceptor(), AuthorizationInterceptor(verifier)],
            # grpcio turns SO_REUSEPORT on by default; a second process would then share the
            # port silently. Only opt in where several processes share a port on purpose.
            options=[("grpc.so_reuseport", 1 if reuse_port else 0)],
        )
        spec.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [spec.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if self.port == 0:
            raise OSError(f"cannot bind {host}:{port}")
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Accept calls (health says NOT_SERVING until the database answers)."""
        asyncio.get_running_loop().set_default_executor(self.executor)
        await self._set_health(NOT_SERVING)
        await self.server.start()
        self._watch = asyncio.create_task(self._watch_database())
        logger.info("%s listening on port %d", self.spec.full_name, self.port)

    async def _set_health(self, status: int) -> None:
        for name in ("", self.spec.full_name):
            await self.health.set(name, status)

    async def _watch_database(self) -> None:
        serving: bool | None = None
        while not self._stopping:
            ok = await asyncio.to_thread(self.spec.database_ping)
            if ok != serving and not self._stopping:
                serving = ok
                await self._set_health(SERVING if ok else NOT_SERVING)
                logger.info("%s is %s", self.spec.full_name, "SERVING" if ok else "NOT_SERVING")
            await asyncio.sleep(self.health_interval)

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, no new calls, in-flight calls finish within grace."""
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        if self._watch is not None:
            self._watch.cancel()
        logger.info("stopping: in-flight calls have %.1fs to finish", self.grace_seconds)
        await self.server.stop(self.grace_seconds)
        self.executor.shutdown(wait=True, cancel_futures=False)
        self.spec.close()
        logger.info("%s stopped", self.spec.full_name)

    async def run_until_signal(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()


async def serve(service: str, *, host: str, port: int) -> None:
    """Run one service process until SIGTERM/SIGINT: what ``cinema serve`` does.

    Settings come from the environment; the service's composition root
    (``services.<service>.__main__.build``) wires its parts and applies its migrations.
    """
    import importlib

    from services.common import logs
    from services.common.settings import Settings

    settings = Settings.from_env(service)
    logs.configure(service, log_format=settings.log_format, level=settings.log_level)
    # The event loop and the use-case threads hand the GIL to each other several times per
    # call; at CPython's default 5 ms switch interval a waiting thread can sit out whole
    # intervals, which showed as a p95 of 70-108 ms at half the peak rate. At 1 ms the same
    # runs gave a p95 of 4-9 ms (docs/benchmarks.md).
    sys.setswitchinterval(0.001)
    root = importlib.import_module(f"services.{service}.__main__")
    spec: ServiceSpec = root.build(settings)
    verifier = TokenVerifier(
        settings.jwt_public_key_pem, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    server = CinemaServer(
        spec,
        verifier,
        host=host,
        port=port,
        grace_seconds=settings.grace_seconds,
        worker_threads=settings.worker_threads,
    )
    await server.run_until_signal()
