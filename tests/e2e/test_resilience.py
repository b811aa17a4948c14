"""Replicas failing under the gateway: clients must not notice one replica of each service
dying, and /healthz must tell the truth when every replica of a service is gone."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from collections import Counter
from collections.abc import Callable

import grpc

from cinema.v1 import cast_pb2, cast_pb2_grpc, movie_pb2, movie_pb2_grpc, user_pb2, user_pb2_grpc
from tests.e2e.conftest import RunningSystem

BURST_SECONDS = 6.0
WORKERS = 8


def test_kill_one_replica_of_each_service_during_a_burst_of_reads(
    system: RunningSystem, admin_token: str
) -> None:
    admin = (("authorization", f"Bearer {admin_token}"),)
    with grpc.insecure_channel(system.address) as channel:
        casts = cast_pb2_grpc.CastServiceStub(channel)
        movies = movie_pb2_grpc.MovieServiceStub(channel)
        users = user_pb2_grpc.UserServiceStub(channel)
        cast_id = casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Burst")), metadata=admin
        ).id
        reads: list[Callable[[], object]] = [
            lambda: casts.GetCast(cast_pb2.GetCastRequest(id=cast_id), timeout=5),
            lambda: movies.ListMovies(movie_pb2.ListMoviesRequest(page_size=5), timeout=5),
            lambda: users.ListUsers(user_pb2.ListUsersRequest(page_size=5), metadata=admin,
                                    timeout=5),
        ]  # fmt: skip
        outcomes: Counter[str] = Counter()
        stop_at = time.monotonic() + BURST_SECONDS

        def worker(index: int) -> Counter[str]:
            seen: Counter[str] = Counter()
            call = 0
            while time.monotonic() < stop_at:
                try:
                    reads[(index + call) % len(reads)]()
                    seen["OK"] += 1
                except grpc.RpcError as error:
                    seen[error.code().name] += 1
                call += 1
            return seen

        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            futures = [pool.submit(worker, i) for i in range(WORKERS)]
            time.sleep(BURST_SECONDS / 3)
            victims = [
                system.pids(f"{service}-1")[0] for service in ("movie", "cast", "user", "order")
            ]
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            for future in futures:
                outcomes.update(future.result())
    assert outcomes["OK"] > 100, outcomes
    assert set(outcomes) == {"OK"}, f"clients saw failures: {outcomes}"


def wait_for_healthz(system: RunningSystem, status: int, timeout: float = 20) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        reply = system.request("GET", "/healthz")
        if reply.status == status:
            return dict(reply.body)
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz stayed {reply.status}: {reply.body}")
        time.sleep(0.3)


def test_healthz_follows_a_service_that_is_down_and_back(system: RunningSystem) -> None:
    wait_for_healthz(system, 200)
    cast_pids = system.pids("cast-")
    for pid in cast_pids:  # every cast replica stops answering (but stays alive)
        os.kill(pid, signal.SIGSTOP)
    try:
        down = wait_for_healthz(system, 503)
        services = down["services"]
        assert isinstance(services, dict)
        assert services["cinema.v1.CastService"]["status"] == "NOT_SERVING"
        assert services["cinema.v1.MovieService"]["status"] == "SERVING"
    finally:
        for pid in cast_pids:
            os.kill(pid, signal.SIGCONT)
    back = wait_for_healthz(system, 200)
    services = back["services"]
    assert isinstance(services, dict)
    assert {info["status"] for info in services.values()} == {"SERVING"}
