"""The named scenarios: what one call of each is, ready to run in a worker process.

Each scenario is a frozen dataclass (it is pickled into the load-generator processes) whose
``open`` connects, checks that one call succeeds (a misconfigured run fails at once
instead of reporting a wall of errors), and returns the operation the load loop calls.
Requests are encoded once at ``open``; ids are taken round-robin from a list shuffled per
worker, so the hot loop does no protobuf or JSON work it does not have to.

gRPC scenarios work against any gRPC endpoint: a replica (direct) or Envoy (through the
gateway); the echo ceiling is ``get-movie-grpc`` against the stub (:mod:`bench.stub`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from bench import catalogue, pg
from bench.clients import OK, GrpcClient, HttpClient, grpc_call
from bench.target import Target, check_database_url
from cinema.v1 import movie_pb2

GET_MOVIE = "/cinema.v1.MovieService/GetMovie"
LIST_MOVIES = "/cinema.v1.MovieService/ListMovies"
#: First page size of the ListMovies scenarios (the service's default page is 50).
LIST_PAGE_SIZE = 20
#: A test-provider token that the payment provider accepts.
PAYMENT_TOKEN = "tok_visa"  # noqa: S105 - a test-provider card token, not a secret


class ScenarioError(RuntimeError):
    """The scenario cannot run against this target (its first call failed)."""


def _shuffled(values: Sequence[str], worker: int) -> list[str]:
    items = list(values)
    random.Random(worker).shuffle(items)
    return items


async def _check(operation: Any, name: str) -> None:
    status = await operation(0)
    if status != OK:
        await operation.close()
        raise ScenarioError(f"{name}: the first call failed with {status}")


# --- gRPC ----------------------------------------------------------------------------------


class _GrpcUnary:
    """Round-robin over pre-encoded requests of one RPC."""

    def __init__(
        self,
        client: GrpcClient,
        path: str,
        requests: list[bytes],
        timeout: float,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self._client = client
        self._callables = client.method(path)
        self._requests = requests
        self._timeout = timeout
        self._metadata = metadata

    async def __call__(self, index: int) -> str:
        request = self._requests[index % len(self._requests)]
        status, _ = await grpc_call(
            self._callables, index, request, deadline=self._timeout, metadata=self._metadata
        )
        return status

    async def close(self) -> None:
        await self._client.close()


@dataclass(frozen=True)
class GetMovieGrpc:
    """``GetMovie`` (basic view) by id over gRPC."""

    target: Target
    ids: tuple[str, ...]
    connections: int = 2
    timeout: float = 5.0
    name: str = "get-movie-grpc"

    async def open(self, worker: int, callers: int) -> _GrpcUnary:
        client = GrpcClient(self.target, self.connections)
        await client.wait_ready(within=10.0)
        requests = [
            movie_pb2.GetMovieRequest(id=movie_id).SerializeToString()
            for movie_id in _shuffled(self.ids, worker)
        ]
        operation = _GrpcUnary(client, GET_MOVIE, requests, self.timeout)
        await _check(operation, self.name)
        return operation


@dataclass(frozen=True)
class ListMoviesGrpc:
    """``ListMovies`` first page over gRPC."""

    target: Target
    page_size: int = LIST_PAGE_SIZE
    connections: int = 2
    timeout: float = 5.0
    name: str = "list-movies-grpc"

    async def open(self, worker: int, callers: int) -> _GrpcUnary:
        client = GrpcClient(self.target, self.connections)
        await client.wait_ready(within=10.0)
        request = movie_pb2.ListMoviesRequest(page_size=self.page_size).SerializeToString()
        operation = _GrpcUnary(client, LIST_MOVIES, [request], self.timeout)
        await _check(operation, self.name)
        return operation


# --- JSON through Envoy ----------------------------------------------------------------------


class _HttpRequests:
    """Round-robin over pre-encoded HTTP requests."""

    def __init__(self, client: HttpClient, requests: list[bytes], timeout: float) -> None:
        self._client = client
        self._requests = requests
        self._timeout = timeout

    async def __call__(self, index: int) -> str:
        status, _ = await self._client.request(
            self._requests[index % len(self._requests)], deadline=self._timeout
        )
        return status

    async def close(self) -> None:
        await self._client.close()


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@dataclass(frozen=True)
class GetMovieJson:
    """``GET /api/v1/movies/{id}`` through Envoy's transcoder."""

    target: Target
    ids: tuple[str, ...]
    timeout: float = 5.0
    name: str = "get-movie-json"

    async def open(self, worker: int, callers: int) -> _HttpRequests:
        client = HttpClient(self.target)
        await client.warm(callers)
        requests = [
            client.encode("GET", f"/api/v1/movies/{movie_id}")
            for movie_id in _shuffled(self.ids, worker)
        ]
        operation = _HttpRequests(client, requests, self.timeout)
        await _check(operation, self.name)
        return operation


@dataclass(frozen=True)
class ListMoviesJson:
    """``GET /api/v1/movies?pageSize=N``: the first page."""

    target: Target
    page_size: int = LIST_PAGE_SIZE
    timeout: float = 5.0
    name: str = "list-movies-json"

    async def open(self, worker: int, callers: int) -> _HttpRequests:
        client = HttpClient(self.target)
        await client.warm(callers)
        request = client.encode("GET", f"/api/v1/movies?pageSize={self.page_size}")
        operation = _HttpRequests(client, [request], self.timeout)
        await _check(operation, self.name)
        return operation


@dataclass(frozen=True)
class CreateMovieJson:
    """``POST /api/v1/movies`` as an admin, naming three existing cast members."""

    target: Target
    admin_token: str
    cast_ids: tuple[str, ...]
    timeout: float = 5.0
    name: str = "create-movie-json"

    async def open(self, worker: int, callers: int) -> _HttpRequests:
        client = HttpClient(self.target)
        await client.warm(callers)
        headers = _bearer(self.admin_token)
        requests = [
            client.encode(
                "POST",
                "/api/v1/movies",
                json.dumps(catalogue.json_movie(worker * 1000 + n, self.cast_ids)).encode(),
                headers,
            )
            for n in range(100)
        ]
        operation = _HttpRequests(client, requests, self.timeout)
        await _check(operation, self.name)
        return operation


class _Buy:
    """CreateOrder then PayOrder, each with a fresh request id, on one connection."""

    def __init__(
        self, client: HttpClient, token: str, movie_ids: list[str], worker: int, timeout: float
    ) -> None:
        self._client = client
        self._headers = _bearer(token)
        self._movie_ids = movie_ids
        # Unique across workers and runs: the idempotency keys must never repeat.
        self._prefix = f"bench-{os.getpid()}-{worker}-{time.time_ns()}"
        self._timeout = timeout

    async def __call__(self, index: int) -> str:
        movie_id = self._movie_ids[index % len(self._movie_ids)]
        order_body = json.dumps({"items": [{"movieId": movie_id, "quantity": 1}]}).encode()
        create = self._client.encode(
            "POST", f"/api/v1/orders?requestId={self._prefix}-o{index}", order_body, self._headers
        )
        status, reply = await self._client.request(create, deadline=self._timeout)
        if status != OK:
            return status
        order_id = json.loads(reply.body)["id"]
        pay_body = json.dumps(
            {"paymentToken": PAYMENT_TOKEN, "requestId": f"{self._prefix}-p{index}"}
        ).encode()
        pay = self._client.encode("POST", f"/api/v1/orders/{order_id}:pay", pay_body, self._headers)
        status, reply = await self._client.request(pay, deadline=self._timeout)
        if status == OK and json.loads(reply.body).get("status") != "ORDER_STATUS_PAID":
            return "app:not-paid"
        return status

    async def close(self) -> None:
        await self._client.close()


@dataclass(frozen=True)
class BuyJson:
    """The buy path as a user: ``POST /api/v1/orders`` then ``POST .../{id}:pay``."""

    target: Target
    user_token: str
    movie_ids: tuple[str, ...]
    timeout: float = 5.0
    name: str = "buy-json"

    async def open(self, worker: int, callers: int) -> _Buy:
        client = HttpClient(self.target)
        await client.warm(callers)
        operation = _Buy(
            client, self.user_token, _shuffled(self.movie_ids, worker), worker, self.timeout
        )
        await _check(operation, self.name)
        return operation


# --- the database alone -----------------------------------------------------------------------


class _BlockingLoop:
    """A blocking call per operation; one caller per worker process is what makes sense."""

    def __init__(self, call: Any, close: Any, ids: list[str]) -> None:
        self._call = call
        self._close = close
        self._ids = ids

    async def __call__(self, index: int) -> str:
        self._call(self._ids[index % len(self._ids)])
        return OK

    async def close(self) -> None:
        self._close()


@dataclass(frozen=True)
class DbGetMovie:
    """The hot-path query alone: ``SELECT`` one movie by primary key with psycopg2.

    Same columns and driver as the service's repository, no SQLAlchemy, no gRPC: the
    database ceiling for GetMovie from one Python client connection per worker.
    """

    database_url: str
    ids: tuple[str, ...]
    name: str = "db-get-movie"

    async def open(self, worker: int, callers: int) -> _BlockingLoop:
        connection = pg.connect(self.database_url, autocommit=True)
        cursor = connection.cursor()
        sql = (
            "SELECT id, title, plot, genres, cast_ids, price_currency, price_amount_minor, "
            "create_time, update_time FROM movies WHERE id = %s"
        )

        def call(movie_id: str) -> None:
            cursor.execute(sql, (movie_id,))
            if cursor.fetchone() is None:
                raise ScenarioError(f"movie {movie_id} is not in the database")

        def close() -> None:
            cursor.close()
            connection.close()

        operation = _BlockingLoop(call, close, _shuffled(self.ids, worker))
        await _check(operation, self.name)
        return operation


@dataclass(frozen=True)
class UseCaseGetMovie:
    """``MovieService.get_movie`` called in-process: the use case with no gRPC around it.

    The same wiring as ``services.movie.__main__`` (engine, unit of work, repository), so
    GetMovie direct over gRPC minus this is what the server stack costs per call.
    """

    database_url: str
    ids: tuple[str, ...]
    name: str = "usecase-get-movie"

    async def open(self, worker: int, callers: int) -> _BlockingLoop:
        import functools

        from services.common.context import Deadline, RequestContext
        from services.common.db import EnginePools, make_engine
        from services.movie.domain import MovieView
        from services.movie.repository import SqlAlchemyMovieUnitOfWork
        from services.movie.service import MovieService

        engine = make_engine(check_database_url(self.database_url), pool_size=2)
        sessions = EnginePools(engine)
        service = MovieService(
            functools.partial(SqlAlchemyMovieUnitOfWork, sessions), casts=NoCasts()
        )
        context = RequestContext(principal=None, bearer_token=None, deadline=Deadline.after(None))

        def call(movie_id: str) -> None:
            service.get_movie(movie_id, MovieView.BASIC, context)

        operation = _BlockingLoop(call, sessions.close, _shuffled(self.ids, worker))
        await _check(operation, self.name)
        return operation


class NoCasts:
    """The basic view never asks the cast service."""

    def get_many(self, cast_ids: Sequence[str], context: Any) -> list[Any]:
        raise AssertionError("GetMovie BASIC must not call the cast service")


# --- fixtures from a running system ---------------------------------------------------------


async def list_movie_ids(target: Target, limit: int) -> list[str]:
    """Up to ``limit`` movie ids, paging ListMovies over gRPC (empty when UNIMPLEMENTED)."""
    ids: list[str] = []
    async with grpc.aio.insecure_channel(target.address) as channel:
        call = channel.unary_unary(
            LIST_MOVIES,
            request_serializer=movie_pb2.ListMoviesRequest.SerializeToString,
            response_deserializer=movie_pb2.ListMoviesResponse.FromString,
        )
        token = ""
        while len(ids) < limit:
            try:
                page = await call(
                    movie_pb2.ListMoviesRequest(page_size=1000, page_token=token), timeout=30
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    break
                raise
            ids.extend(m.id for m in page.movies)
            token = page.next_page_token
            if not token:
                break
    return ids[:limit]


def run_async(coroutine: Any) -> Any:
    """Run ``coroutine`` on a fresh event loop (the CLI is synchronous)."""
    return asyncio.run(coroutine)
