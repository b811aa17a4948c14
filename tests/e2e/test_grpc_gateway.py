"""Native gRPC through Envoy: grpcurl via the gateway's reflection, and the Python stubs."""

from __future__ import annotations

import json
import subprocess

import grpc

from cinema.v1 import cast_pb2, cast_pb2_grpc, money_pb2, movie_pb2, movie_pb2_grpc
from tests.e2e.conftest import RunningSystem
from tests.support.errors import call_error
from tests.support.processes import tool

SERVICES = {
    "cinema.v1.MovieService",
    "cinema.v1.CastService",
    "cinema.v1.UserService",
    "cinema.v1.OrderService",
}


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("grpcurl"), "-plaintext", *args], capture_output=True, text=True, timeout=30
    )


def test_grpcurl_lists_describes_and_calls_every_service(
    system: RunningSystem, admin_token: str
) -> None:
    listed = grpcurl(system.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) >= SERVICES
    for service in SERVICES:
        described = grpcurl(system.address, "describe", service)
        assert described.returncode == 0, described.stderr
        assert f"service {service.rsplit('.', 1)[1]} {{" in described.stdout

    created = grpcurl(
        "-H", f"authorization: Bearer {admin_token}",
        "-d", json.dumps({"cast": {"name": "Carrie-Anne Moss"}}),
        system.address, "cinema.v1.CastService/CreateCast",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    cast_id = json.loads(created.stdout)["id"]
    fetched = grpcurl(
        "-d", json.dumps({"id": cast_id}), system.address, "cinema.v1.CastService/GetCast"
    )
    assert json.loads(fetched.stdout)["name"] == "Carrie-Anne Moss"
    missing = grpcurl("-d", '{"id": "nope"}', system.address, "cinema.v1.CastService/GetCast")
    assert missing.returncode == 64 + grpc.StatusCode.NOT_FOUND.value[0]
    health = grpcurl(system.address, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"


def test_python_stubs_through_envoy(system: RunningSystem, admin_token: str) -> None:
    admin = (("authorization", f"Bearer {admin_token}"),)
    with grpc.insecure_channel(system.address) as channel:
        casts = cast_pb2_grpc.CastServiceStub(channel)
        movies = movie_pb2_grpc.MovieServiceStub(channel)
        cast = casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Laurence Fishburne")),
            metadata=admin,
            timeout=10,
        )
        movie = movies.CreateMovie(
            movie_pb2.CreateMovieRequest(
                movie=movie_pb2.Movie(
                    title="The Matrix Reloaded",
                    cast_ids=[cast.id],
                    price=money_pb2.Money(currency_code="USD", amount_minor=1299),
                )
            ),
            metadata=admin,
            timeout=10,
        )
        full = movies.GetMovie(
            movie_pb2.GetMovieRequest(id=movie.id, view=movie_pb2.MOVIE_VIEW_FULL), timeout=10
        )
        assert [c.name for c in full.cast_members] == ["Laurence Fishburne"]
        try:
            movies.CreateMovie(
                movie_pb2.CreateMovieRequest(
                    movie=movie_pb2.Movie(
                        title="x",
                        cast_ids=["nope"],
                        price=money_pb2.Money(currency_code="USD", amount_minor=1),
                    )
                ),
                metadata=admin,
                timeout=10,
            )
            raise AssertionError("an unknown cast id must be refused")
        except grpc.RpcError as error:
            details = call_error(error)
            assert details.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "movie.cast_ids[0]" in details.violations, "rich details survive Envoy"
