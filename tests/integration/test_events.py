"""Events between services, with a real NATS server (JetStream) and both databases: the
outbox is written with the change or not at all, the relay survives a broker outage, and
consumers apply each event once, dead-letter what they cannot read, and lose nothing when a
replica is killed mid-batch."""

from __future__ import annotations

import contextlib
import pathlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import sqlalchemy
from sqlalchemy import func, select

from cinema.v1 import cast_pb2, cast_pb2_grpc, events_pb2, movie_pb2, movie_pb2_grpc
from services.cast.models import EVENTS as CAST_EVENTS
from services.cast.repository import SqlAlchemyCastUnitOfWork
from services.common.clock import utc_now
from services.common.context import Role
from services.common.db import EnginePools, make_engine
from services.common.events import subjects
from services.common.events.bus import DEAD_LETTER_REASON
from services.common.events.store import EventLog
from services.common.ids import new_id
from services.movie.models import EVENTS as MOVIE_EVENTS
from tests.conftest import DatabaseFactory
from tests.support.nats import NatsServer, run_js
from tests.support.processes import start_cinema_serve
from tests.support.servers import service_settings, start_service
from tests.support.tokens import SigningKeys


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """``check()`` once it returns something true; AssertionError with its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {value!r}")
        time.sleep(interval)


class Shop:
    """Cast and movie services on a NATS server of their own, and their databases."""

    def __init__(
        self, keys: SigningKeys, databases: DatabaseFactory, nats: NatsServer, label: str
    ) -> None:
        self.nats = nats
        env = {**keys.env(), "NATS_URL": nats.url}
        self.cast_url = databases(f"cast_{label}")
        self.movie_url = databases(f"movie_{label}")
        self.cast = start_service("cast", service_settings("cast", self.cast_url, env))
        self.movie_env = {**env, "CAST_SERVICE_ADDR": self.cast.address}
        self.movie = start_service(
            "movie", service_settings("movie", self.movie_url, self.movie_env)
        )
        self.casts = cast_pb2_grpc.CastServiceStub(self.cast.channel())
        self.movies = movie_pb2_grpc.MovieServiceStub(self.movie.channel())
        self.admin = keys.metadata("admin-1", Role.ADMIN)
        self.cast_engine = sqlalchemy.create_engine(self.cast_url)
        self.movie_engine = sqlalchemy.create_engine(self.movie_url)
        self._movie_stopped = False

    def add_cast(self, name: str) -> str:
        reply = self.casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name=name)), metadata=self.admin
        )
        return reply.id

    def add_movie(self, cast_ids: list[str], title: str = "Heat") -> str:
        movie = movie_pb2.Movie(title=title, plot="A heist.", genres=["crime"], cast_ids=cast_ids)
        movie.price.currency_code, movie.price.amount_minor = "EUR", 999
        return self.movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie), metadata=self.admin
        ).id

    def cast_ids_of(self, movie_id: str) -> list[str]:
        request = movie_pb2.GetMovieRequest(id=movie_id)
        return list(self.movies.GetMovie(request).cast_ids)

    def count(self, engine: sqlalchemy.Engine, table: sqlalchemy.Table, *where: Any) -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(table).where(*where)
                ).scalar_one()
            )

    def receipts(self) -> int:
        inbox = MOVIE_EVENTS.inbox
        return self.count(self.movie_engine, inbox, inbox.c.consumer == "movie")

    def unsent(self) -> int:
        outbox = CAST_EVENTS.outbox
        return self.count(self.cast_engine, outbox, outbox.c.publish_time.is_(None))

    def stop_movie(self) -> None:
        if not self._movie_stopped:
            self._movie_stopped = True
            self.movie.stop()

    def close(self) -> None:
        self.stop_movie()
        self.cast.stop()
        self.cast_engine.dispose()
        self.movie_engine.dispose()


@pytest.fixture
def own_nats(tmp_path: pathlib.Path) -> Iterator[NatsServer]:
    """A broker of this test's alone, which it may stop and start."""
    server = NatsServer(tmp_path / "nats")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def shop(
    keys: SigningKeys,
    databases: DatabaseFactory,
    own_nats: NatsServer,
    request: pytest.FixtureRequest,
) -> Iterator[Shop]:
    label = request.node.name.split("[")[0].removeprefix("test_")[:20]
    running = Shop(keys, databases, own_nats, label)
    try:
        yield running
    finally:
        running.close()


def stream_messages(url: str, stream: str) -> list[Any]:
    """Every message in ``stream``, oldest first."""

    async def read(js: Any) -> list[Any]:
        info = await js.stream_info(stream)
        found = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            with contextlib.suppress(Exception):
                found.append(await js.get_msg(stream, sequence))
        return found

    return run_js(url, read)


def publish(url: str, subject: str, payload: bytes, message_id: str) -> None:
    async def send(js: Any) -> None:
        await js.publish(subject, payload, headers={"Nats-Msg-Id": message_id})

    run_js(url, send)


# --- the outbox: with the change, or not at all ------------------------------------------------


def test_deleting_a_cast_removes_it_from_every_movie(shop: Shop) -> None:
    keanu, carrie = shop.add_cast("Keanu Reeves"), shop.add_cast("Carrie-Anne Moss")
    matrix = shop.add_movie([keanu, carrie], "The Matrix")
    speed = shop.add_movie([keanu], "Speed")
    shop.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=keanu), metadata=shop.admin)
    eventually(lambda: shop.cast_ids_of(matrix) == [carrie] and shop.cast_ids_of(speed) == [], 2.0)
    # Published once (Nats-Msg-Id is the event id), marked sent, applied once.
    (message,) = [m for m in stream_messages(shop.nats.url, subjects.STREAM)]
    event = events_pb2.CastDeleted.FromString(message.data)
    assert message.subject == "cinema.v1.CastDeleted"
    assert (event.cast_id, message.headers["Nats-Msg-Id"]) == (keanu, event.event_id)
    assert event.occur_time.seconds > 0
    eventually(lambda: shop.unsent() == 0)
    assert shop.receipts() == 1


def test_a_failed_transaction_leaves_no_outbox_row(shop: Shop) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        shop.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=new_id()), metadata=shop.admin)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    # A use case that stores its event and then fails rolls both back.
    engine = make_engine(shop.cast_url)
    pools = EnginePools(engine)
    log = EventLog(CAST_EVENTS)

    def fail_after_writing_the_event() -> None:
        with SqlAlchemyCastUnitOfWork(pools, events=log) as uow:
            uow.outbox.add(events_pb2.CastDeleted(cast_id="x"), utc_now())
            raise RuntimeError("the use case failed after writing its event")

    try:
        with pytest.raises(RuntimeError):
            fail_after_writing_the_event()
    finally:
        pools.close()
    assert shop.count(shop.cast_engine, CAST_EVENTS.outbox) == 0


# --- the relay: a broker outage loses nothing and doubles nothing --------------------------------


def test_events_wait_in_the_outbox_while_the_broker_is_away(shop: Shop) -> None:
    casts = [shop.add_cast(f"Actor {i}") for i in range(6)]
    movie = shop.add_movie(casts)
    shop.nats.stop()
    for cast_id in casts[:4]:
        shop.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=cast_id), metadata=shop.admin)
    # Writes go on without the broker; the events wait, and reads still work.
    time.sleep(1.5)
    assert shop.unsent() == 4
    assert shop.cast_ids_of(movie) == casts
    shop.nats.start()  # same port, same store
    eventually(lambda: shop.cast_ids_of(movie) == casts[4:], 20.0)
    eventually(lambda: shop.unsent() == 0)
    assert shop.receipts() == 4
    published = stream_messages(shop.nats.url, subjects.STREAM)
    assert len(published) == 4  # each event stored once in the stream


# --- consumers: once, durable, and past poison ----------------------------------------------------


def test_an_event_delivered_twice_has_one_effect(shop: Shop) -> None:
    keanu = shop.add_cast("Keanu Reeves")
    movie = shop.add_movie([keanu])
    before = shop.movies.GetMovie(movie_pb2.GetMovieRequest(id=movie)).update_time.ToDatetime()
    event = events_pb2.CastDeleted(event_id=new_id(), cast_id=keanu)
    event.occur_time.GetCurrentTime()
    # Two deliveries of one event (two message ids, so JetStream keeps both).
    publish(shop.nats.url, "cinema.v1.CastDeleted", event.SerializeToString(), "copy-1")
    publish(shop.nats.url, "cinema.v1.CastDeleted", event.SerializeToString(), "copy-2")
    eventually(lambda: shop.cast_ids_of(movie) == [])
    changed = shop.movies.GetMovie(movie_pb2.GetMovieRequest(id=movie)).update_time.ToDatetime()
    assert changed > before
    time.sleep(1.0)  # the second copy has been handled by now
    assert shop.receipts() == 1
    again = shop.movies.GetMovie(movie_pb2.GetMovieRequest(id=movie)).update_time.ToDatetime()
    assert again == changed  # the second delivery changed nothing


def test_a_malformed_event_goes_to_the_dead_letters_and_the_consumer_goes_on(shop: Shop) -> None:
    keanu = shop.add_cast("Keanu Reeves")
    movie = shop.add_movie([keanu])
    publish(shop.nats.url, "cinema.v1.CastDeleted", b"\xff\xfe not protobuf", "poison-1")
    shop.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=keanu), metadata=shop.admin)
    eventually(lambda: shop.cast_ids_of(movie) == [])
    (dead,) = eventually(lambda: stream_messages(shop.nats.url, subjects.DEAD_LETTER_STREAM))
    assert dead.subject == "cinema.dead_letter.movie.cinema.v1.CastDeleted"
    assert dead.data == b"\xff\xfe not protobuf"
    assert "cannot decode cinema.v1.CastDeleted" in dead.headers[DEAD_LETTER_REASON]
    assert shop.receipts() == 1


def test_killing_a_consumer_replica_mid_batch_loses_and_doubles_nothing(shop: Shop) -> None:
    casts = [shop.add_cast(f"Extra {i}") for i in range(300)]
    movies = [shop.add_movie(casts[i : i + 30], f"Movie {i}") for i in range(0, 300, 30)]
    # Two movie replicas as processes (same database, same durable consumer) instead of the
    # in-process one, so that one of them can be killed.
    env = {**shop.movie_env, "DATABASE_URL": shop.movie_url}
    replicas = [start_cinema_serve("movie", env) for _ in range(2)]
    shop.stop_movie()
    try:
        for cast_id in casts:
            shop.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=cast_id), metadata=shop.admin)
        eventually(lambda: shop.receipts() >= 20, 30.0, 0.01)
        replicas[0].process.send_signal(signal.SIGKILL)  # in the middle of its batch
        replicas[0].process.wait(timeout=10)
        # Its unacked events come back to the survivor after the ack wait (10 s).
        eventually(lambda: shop.receipts() == len(casts), 60.0, 0.2)
        movie_stub = movie_pb2_grpc.MovieServiceStub(grpc.insecure_channel(replicas[1].address))
        for movie in movies:
            assert list(movie_stub.GetMovie(movie_pb2.GetMovieRequest(id=movie)).cast_ids) == []
        links = shop.count(shop.movie_engine, movie_links())
        assert links == 0
        # One receipt per event (the inbox's key), nothing dead-lettered, nothing pending.
        assert not has_stream(shop.nats.url, subjects.DEAD_LETTER_STREAM) or not (
            stream_messages(shop.nats.url, subjects.DEAD_LETTER_STREAM)
        )
    finally:
        for replica in replicas:
            with contextlib.suppress(Exception):
                replica.terminate(timeout=15)


def movie_links() -> sqlalchemy.Table:
    from services.movie.models import MovieCastRow

    return MovieCastRow.__table__  # type: ignore[return-value]


def has_stream(url: str, name: str) -> bool:
    async def check(js: Any) -> bool:
        try:
            await js.stream_info(name)
        except Exception:
            return False
        return True

    return run_js(url, check)
