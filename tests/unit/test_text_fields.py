"""NUL characters in any string field of a request, at any depth, are named."""

from __future__ import annotations

from cinema.v1 import movie_pb2, order_pb2, user_pb2
from services.common.text_fields import nul_violations


def test_a_clean_request_has_no_violations() -> None:
    request = movie_pb2.CreateMovieRequest(movie=movie_pb2.Movie(title="Alien", cast_ids=["a"]))
    assert nul_violations(request) == []


def test_every_field_with_a_nul_is_named_with_its_path() -> None:
    request = movie_pb2.CreateMovieRequest(
        movie=movie_pb2.Movie(title="Ali\x00en", cast_ids=["ok", "b\x00d"], genres=["\x00"])
    )
    fields = {v.field for v in nul_violations(request)}
    assert fields == {"movie.title", "movie.cast_ids[1]", "movie.genres[0]"}


def test_repeated_messages_and_top_level_fields() -> None:
    order = order_pb2.CreateOrderRequest(
        order=order_pb2.Order(items=[order_pb2.OrderItem(movie_id="m\x00")]), request_id="r\x00"
    )
    assert {v.field for v in nul_violations(order)} == {"order.items[0].movie_id", "request_id"}
    login = user_pb2.LoginRequest(email="a\x00@x.test", password="pw")
    assert [v.field for v in nul_violations(login)] == ["email"]
