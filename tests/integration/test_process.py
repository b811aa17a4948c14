"""``cinema serve`` as a process: reflection through grpcurl, graceful SIGTERM with a call in
flight, and a clear message for bad settings."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from cinema.v1 import cast_pb2, cast_pb2_grpc, money_pb2, movie_pb2, movie_pb2_grpc
from services.common.context import Role
from tests.conftest import DatabaseFactory
from tests.support.processes import ServiceProcess, start_cinema_serve, tool
from tests.support.servers import service_settings, start_service
from tests.support.tokens import SigningKeys


@pytest.fixture
def movie_process(keys: SigningKeys, databases: DatabaseFactory) -> Iterator[ServiceProcess]:
    process = start_cinema_serve("movie", {**keys.env(), "DATABASE_URL": databases("movie_proc")})
    yield process
    process.terminate()


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("grpcurl"), "-plaintext", *args], capture_output=True, text=True, timeout=30
    )


def test_grpcurl_lists_describes_and_calls_through_reflection(
    movie_process: ServiceProcess, keys: SigningKeys
) -> None:
    listed = grpcurl(movie_process.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "cinema.v1.MovieService" in listed.stdout.split()

    # grpcio-reflection resolves services and messages; a bare method symbol
    # (cinema.v1.MovieService.CreateMovie) is not found by Python's descriptor pool.
    described = grpcurl(movie_process.address, "describe", "cinema.v1.MovieService")
    assert described.returncode == 0, described.stderr
    assert "rpc CreateMovie ( .cinema.v1.CreateMovieRequest )" in described.stdout
    message = grpcurl(movie_process.address, "describe", "cinema.v1.Movie")
    assert "repeated string cast_ids = 5" in message.stdout

    token = keys.token("admin", Role.ADMIN)
    body = {"movie": {"title": "Heat", "price": {"currencyCode": "USD", "amountMinor": "1299"}}}
    created = grpcurl(
        "-H", f"authorization: Bearer {token}", "-d", json.dumps(body),
        movie_process.address, "cinema.v1.MovieService/CreateMovie",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    movie = json.loads(created.stdout)
    fetched = grpcurl(
        "-d", json.dumps({"id": movie["id"]}),
        movie_process.address, "cinema.v1.MovieService/GetMovie",
    )  # fmt: skip
    assert json.loads(fetched.stdout)["title"] == "Heat"

    refused = grpcurl(
        "-d", json.dumps(body), movie_process.address, "cinema.v1.MovieService/CreateMovie"
    )
    assert refused.returncode == 64 + grpc.StatusCode.UNAUTHENTICATED.value[0]


class SlowCastService(cast_pb2_grpc.CastServiceServicer):
    """Stands in for a cast service behind a slow network: answers after ``delay``."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.called = threading.Event()
        self.time_remaining: list[float | None] = []

    def BatchGetCasts(
        self, request: cast_pb2.BatchGetCastsRequest, context: grpc.ServicerContext
    ) -> cast_pb2.BatchGetCastsResponse:
        self.time_remaining.append(context.time_remaining())
        self.called.set()
        time.sleep(self.delay)
        return cast_pb2.BatchGetCastsResponse(
            casts=[cast_pb2.Cast(id=i, name=f"cast {i}") for i in request.ids]
        )


@pytest.fixture
def slow_cast() -> Iterator[tuple[SlowCastService, int]]:
    servicer = SlowCastService(delay=1.5)  # type: ignore[abstract]  # only BatchGetCasts is needed
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    cast_pb2_grpc.add_CastServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def test_sigterm_lets_the_call_in_flight_finish(
    keys: SigningKeys, databases: DatabaseFactory, slow_cast: tuple[SlowCastService, int]
) -> None:
    servicer, cast_port = slow_cast
    process = start_cinema_serve(
        "movie",
        {
            **keys.env(),
            "DATABASE_URL": databases("movie_sigterm"),
            "CAST_SERVICE_ADDR": f"127.0.0.1:{cast_port}",
            "CINEMA_GRACE_SECONDS": "10",
        },
    )
    channel = grpc.insecure_channel(process.address)
    movies = movie_pb2_grpc.MovieServiceStub(channel)
    request = movie_pb2.CreateMovieRequest(
        movie=movie_pb2.Movie(
            title="In flight",
            cast_ids=["c1"],
            price=money_pb2.Money(currency_code="USD", amount_minor=100),
        )
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            movies.CreateMovie, request, metadata=keys.metadata("admin", Role.ADMIN), timeout=20
        )
        assert servicer.called.wait(10), "the call never reached the cast peer"
        process.process.send_signal(15)  # SIGTERM while the call waits on its peer
        created = future.result(timeout=20)
    assert created.title == "In flight"
    assert list(created.cast_ids) == ["c1"]
    assert process.process.wait(timeout=20) == 0
    log = "".join(process.log)
    assert "stopping: in-flight calls have" in log
    channel.close()


def test_bad_settings_stop_the_process_with_the_variable_named(keys: SigningKeys) -> None:
    result = subprocess.run(
        [tool("cinema"), "serve", "movie", "--port", "0"],
        env={**keys.env(), "DATABASE_URL": "mysql://nope", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_outbound_calls_take_the_callers_remaining_time(
    keys: SigningKeys, databases: DatabaseFactory, slow_cast: tuple[SlowCastService, int]
) -> None:
    servicer, cast_port = slow_cast
    settings = service_settings(
        "movie",
        databases("movie_deadline"),
        {**keys.env(), "CAST_SERVICE_ADDR": f"127.0.0.1:{cast_port}"},
    )
    movie = start_service("movie", settings)
    try:
        movies = movie_pb2_grpc.MovieServiceStub(movie.channel())
        request = movie_pb2.CreateMovieRequest(
            movie=movie_pb2.Movie(
                title="Too slow",
                cast_ids=["c1"],
                price=money_pb2.Money(currency_code="USD", amount_minor=100),
            )
        )
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            movies.CreateMovie(request, metadata=keys.metadata("admin", Role.ADMIN), timeout=0.6)
        elapsed = time.monotonic() - started
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert elapsed < 1.4, "the caller must not wait for the peer's own 5 s ceiling"
        remaining = servicer.time_remaining[0]
        assert remaining is not None
        # gRPC encodes grpc-timeout rounded up to a few digits, so the peer may see a hair more
        # than the caller's 0.6 s; what matters is that it is the caller's budget, not 5 s.
        assert remaining < 0.65, "the peer call must carry the caller's remaining time"
        time.sleep(servicer.delay)  # let the slow peer answer; the movie must still not exist
        listed = movies.ListMovies(movie_pb2.ListMoviesRequest()).movies
        assert list(listed) == []
    finally:
        movie.stop()


def test_metrics_count_each_call_by_method_and_code(movie_process: ServiceProcess) -> None:
    assert movie_process.metrics_port is not None, "cinema serve serves /metrics by default"

    def scrape() -> dict[str, float]:
        url = f"http://127.0.0.1:{movie_process.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    key = (
        'cinema_rpc_server_duration_seconds_count{code="NOT_FOUND",method="GetMovie",'
        'service="cinema.v1.MovieService"}'
    )
    before = scrape().get(key, 0.0)
    with grpc.insecure_channel(movie_process.address) as channel:
        movies = movie_pb2_grpc.MovieServiceStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as missing:
                movies.GetMovie(movie_pb2.GetMovieRequest(id="no-such-movie"), timeout=5)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError):
            movies.GetMovie(movie_pb2.GetMovieRequest(id="x" * 500), timeout=5)
    after = scrape()
    assert after[key] == before + 3
    assert after[key.replace("NOT_FOUND", "INVALID_ARGUMENT")] >= 1
    assert after['cinema_db_pool_size{pool="transactions"}'] >= 1
    waits = [v for k, v in after.items() if k.startswith("cinema_db_pool_wait_seconds_count")]
    assert sum(waits) >= 3, "each call's unit of work waited for its connection"
    assert after["process_resident_memory_bytes"] > 0
