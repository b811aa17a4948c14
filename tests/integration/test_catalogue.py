"""The movie and cast services end to end over gRPC, on SQLite and on PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from cinema.v1 import cast_pb2, cast_pb2_grpc, money_pb2, movie_pb2, movie_pb2_grpc
from services.common.context import Role
from tests.conftest import DatabaseFactory
from tests.integration.conftest import Catalogue
from tests.support.errors import call_error
from tests.support.servers import service_settings, start_service
from tests.support.tokens import SigningKeys


def usd(amount: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="USD", amount_minor=amount)


def new_cast(catalogue: Catalogue, name: str, nationality: str | None = None) -> cast_pb2.Cast:
    cast = cast_pb2.Cast(name=name)
    if nationality is not None:
        cast.nationality = nationality
    return catalogue.casts.CreateCast(
        cast_pb2.CreateCastRequest(cast=cast), metadata=catalogue.admin
    )


def new_movie(catalogue: Catalogue, **fields: object) -> movie_pb2.Movie:
    movie = movie_pb2.Movie(title="Alien", plot="In space.", price=usd(999))
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(movie, name).extend(value)
        elif isinstance(value, money_pb2.Money):
            movie.price.CopyFrom(value)
        else:
            setattr(movie, name, value)
    return catalogue.movies.CreateMovie(
        movie_pb2.CreateMovieRequest(movie=movie), metadata=catalogue.admin
    )


def expect_error(call: object, code: grpc.StatusCode) -> dict[str, str]:
    """Run ``call`` (a zero-argument callable), assert it fails with ``code``."""
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    error = call_error(caught.value)
    assert error.code == code, error
    return error.violations


# --- casts -------------------------------------------------------------------------------


def test_cast_create_get_update_delete(catalogue: Catalogue) -> None:
    created = new_cast(catalogue, "  Sigourney Weaver ", "American")
    assert created.id and created.name == "Sigourney Weaver"
    assert created.create_time.seconds > 0 and created.update_time == created.create_time

    fetched = catalogue.casts.GetCast(cast_pb2.GetCastRequest(id=created.id))
    assert fetched == created

    updated = catalogue.casts.UpdateCast(
        cast_pb2.UpdateCastRequest(
            cast=cast_pb2.Cast(id=created.id, name="S. Weaver", nationality="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=catalogue.admin,
    )
    assert updated.name == "S. Weaver" and updated.nationality == "American"
    assert updated.update_time.ToNanoseconds() >= created.update_time.ToNanoseconds()

    catalogue.casts.DeleteCast(cast_pb2.DeleteCastRequest(id=created.id), metadata=catalogue.admin)
    expect_error(
        lambda: catalogue.casts.GetCast(cast_pb2.GetCastRequest(id=created.id)),
        grpc.StatusCode.NOT_FOUND,
    )
    expect_error(
        lambda: catalogue.casts.DeleteCast(
            cast_pb2.DeleteCastRequest(id=created.id), metadata=catalogue.admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )


def test_cast_nationality_is_optional_and_can_be_cleared(catalogue: Catalogue) -> None:
    created = new_cast(catalogue, "No Nationality")
    assert not created.HasField("nationality")
    with_nationality = new_cast(catalogue, "Has One", "French")
    cleared = catalogue.casts.UpdateCast(
        cast_pb2.UpdateCastRequest(
            cast=cast_pb2.Cast(id=with_nationality.id),
            update_mask=field_mask_pb2.FieldMask(paths=["nationality"]),
        ),
        metadata=catalogue.admin,
    )
    assert not cleared.HasField("nationality")


@pytest.mark.parametrize(
    ("cast", "field"),
    [
        (cast_pb2.Cast(name=""), "cast.name"),
        (cast_pb2.Cast(name="   "), "cast.name"),
        (cast_pb2.Cast(name="x" * 201), "cast.name"),
        (cast_pb2.Cast(name="ok", nationality="n" * 101), "cast.nationality"),
    ],
)
def test_cast_bad_input_names_the_field(
    catalogue: Catalogue, cast: cast_pb2.Cast, field: str
) -> None:
    violations = expect_error(
        lambda: catalogue.casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast), metadata=catalogue.admin
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert field in violations


def test_cast_update_mask_is_checked(catalogue: Catalogue) -> None:
    created = new_cast(catalogue, "Masked")
    violations = expect_error(
        lambda: catalogue.casts.UpdateCast(
            cast_pb2.UpdateCastRequest(
                cast=cast_pb2.Cast(id=created.id, name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["id", "create_time", "bogus"]),
            ),
            metadata=catalogue.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "update_mask" in violations
    expect_error(
        lambda: catalogue.casts.UpdateCast(
            cast_pb2.UpdateCastRequest(cast=cast_pb2.Cast(id="missing", name="x")),
            metadata=catalogue.admin,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    unchanged = catalogue.casts.GetCast(cast_pb2.GetCastRequest(id=created.id))
    assert unchanged.name == "Masked"


def test_list_casts_pages_through_everything_once(catalogue: Catalogue) -> None:
    made = {new_cast(catalogue, f"Pager {i}").id for i in range(7)}
    seen: list[str] = []
    token = ""
    while True:
        page = catalogue.casts.ListCasts(cast_pb2.ListCastsRequest(page_size=3, page_token=token))
        assert len(page.casts) <= 3
        seen.extend(c.id for c in page.casts)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)), "a cast appeared on two pages"
    assert made <= set(seen)
    assert seen == sorted(seen), "order must be stable (oldest first)"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (cast_pb2.ListCastsRequest(page_size=-1), "page_size"),
        (cast_pb2.ListCastsRequest(page_token="not a token!"), "page_token"),
        (cast_pb2.ListCastsRequest(page_token="eyJrIjoxfQ"), "page_token"),
    ],
)
def test_list_casts_bad_paging(
    catalogue: Catalogue, request_: cast_pb2.ListCastsRequest, field: str
) -> None:
    violations = expect_error(
        lambda: catalogue.casts.ListCasts(request_), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert field in violations


def test_list_casts_lowers_a_page_size_above_the_maximum(catalogue: Catalogue) -> None:
    # AIP-158: a page size the server cannot honour is lowered to its maximum, not refused.
    for i in range(3):
        new_cast(catalogue, f"Large page {i}")
    page = catalogue.casts.ListCasts(cast_pb2.ListCastsRequest(page_size=5000))
    everything = catalogue.casts.ListCasts(cast_pb2.ListCastsRequest(page_size=1000))
    assert [c.id for c in page.casts] == [c.id for c in everything.casts]
    assert page.next_page_token == everything.next_page_token


def test_batch_get_casts_keeps_order_and_omits_unknown(catalogue: Catalogue) -> None:
    a, b = new_cast(catalogue, "A"), new_cast(catalogue, "B")
    found = catalogue.casts.BatchGetCasts(
        cast_pb2.BatchGetCastsRequest(ids=[b.id, "unknown", a.id, b.id])
    ).casts
    assert [c.id for c in found] == [b.id, a.id]


# --- movies ------------------------------------------------------------------------------


def test_movie_create_and_get_basic_and_full(catalogue: Catalogue) -> None:
    ripley, ash = new_cast(catalogue, "Ripley"), new_cast(catalogue, "Ash")
    movie = new_movie(
        catalogue, genres=["Horror", "Sci-Fi", "Horror"], cast_ids=[ripley.id, ash.id]
    )
    assert movie.id and movie.title == "Alien"
    assert list(movie.genres) == ["Horror", "Sci-Fi"], "duplicates are dropped, order kept"
    assert movie.price == usd(999)
    assert not movie.cast_members

    basic = catalogue.movies.GetMovie(movie_pb2.GetMovieRequest(id=movie.id))
    assert basic == movie
    full = catalogue.movies.GetMovie(
        movie_pb2.GetMovieRequest(id=movie.id, view=movie_pb2.MOVIE_VIEW_FULL)
    )
    assert [c.name for c in full.cast_members] == ["Ripley", "Ash"]
    assert full.cast_members[0] == ripley


def test_movie_with_unknown_cast_ids_is_refused_and_not_written(catalogue: Catalogue) -> None:
    known = new_cast(catalogue, "Known")
    before = catalogue.movies.ListMovies(movie_pb2.ListMoviesRequest(page_size=1000)).movies
    violations = expect_error(
        lambda: new_movie(catalogue, title="Ghost", cast_ids=[known.id, "nobody", "ghost"]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(violations) == {"movie.cast_ids[1]", "movie.cast_ids[2]"}
    assert "'nobody'" in violations["movie.cast_ids[1]"]
    after = catalogue.movies.ListMovies(movie_pb2.ListMoviesRequest(page_size=1000)).movies
    assert len(after) == len(before)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": ""}, "movie.title"),
        ({"title": "t" * 201}, "movie.title"),
        ({"plot": "p" * 5001}, "movie.plot"),
        ({"price": usd(-1)}, "movie.price.amount_minor"),
        (
            {"price": money_pb2.Money(currency_code="usd", amount_minor=1)},
            "movie.price.currency_code",
        ),
        ({"genres": [""]}, "movie.genres[0]"),
        ({"genres": ["g" * 51]}, "movie.genres[0]"),
        ({"genres": [f"g{i}" for i in range(21)]}, "movie.genres"),
        ({"cast_ids": [""]}, "movie.cast_ids[0]"),
    ],
)
def test_movie_bad_input_names_the_field(
    catalogue: Catalogue, fields: dict[str, object], field: str
) -> None:
    violations = expect_error(
        lambda: new_movie(catalogue, **fields), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert field in violations


def test_movie_without_price_is_refused(catalogue: Catalogue) -> None:
    violations = expect_error(
        lambda: catalogue.movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie_pb2.Movie(title="Free")),
            metadata=catalogue.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "movie.price" in violations


def test_movie_partial_update(catalogue: Catalogue) -> None:
    cast = new_cast(catalogue, "Updater")
    movie = new_movie(catalogue, title="Before", genres=["Drama"])
    # An empty mask changes exactly the fields that are set (AIP-134), like the
    # FastAPI original's MovieUpdate with optional fields.
    updated = catalogue.movies.UpdateMovie(
        movie_pb2.UpdateMovieRequest(
            movie=movie_pb2.Movie(id=movie.id, title="After", cast_ids=[cast.id])
        ),
        metadata=catalogue.admin,
    )
    assert updated.title == "After" and list(updated.cast_ids) == [cast.id]
    assert list(updated.genres) == ["Drama"] and updated.price == movie.price
    # A path in the mask with an empty value clears the field.
    cleared = catalogue.movies.UpdateMovie(
        movie_pb2.UpdateMovieRequest(
            movie=movie_pb2.Movie(id=movie.id),
            update_mask=field_mask_pb2.FieldMask(paths=["genres"]),
        ),
        metadata=catalogue.admin,
    )
    assert list(cleared.genres) == [] and cleared.title == "After"


def test_movie_update_checks_mask_price_and_casts(catalogue: Catalogue) -> None:
    movie = new_movie(catalogue, title="Checked", genres=["Drama"])
    violations = expect_error(
        lambda: catalogue.movies.UpdateMovie(
            movie_pb2.UpdateMovieRequest(
                movie=movie_pb2.Movie(id=movie.id),
                update_mask=field_mask_pb2.FieldMask(paths=["genres", "price"]),
            ),
            metadata=catalogue.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "movie.price" in violations
    violations = expect_error(
        lambda: catalogue.movies.UpdateMovie(
            movie_pb2.UpdateMovieRequest(
                movie=movie_pb2.Movie(id=movie.id, cast_ids=["nobody"]),
            ),
            metadata=catalogue.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "movie.cast_ids[0]" in violations
    violations = expect_error(
        lambda: catalogue.movies.UpdateMovie(
            movie_pb2.UpdateMovieRequest(
                movie=movie_pb2.Movie(id=movie.id, title="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["cast_members"]),
            ),
            metadata=catalogue.admin,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "update_mask" in violations
    after = catalogue.movies.GetMovie(movie_pb2.GetMovieRequest(id=movie.id))
    assert after == movie, "a refused update changes nothing"


def test_list_movies_filters_and_pages(catalogue: Catalogue) -> None:
    star = new_cast(catalogue, "Filter Star")
    western = [new_movie(catalogue, title=f"West {i}", genres=["Western-x"]) for i in range(3)]
    starring = [
        new_movie(catalogue, title=f"Star {i}", genres=["Noir-x"], cast_ids=[star.id])
        for i in range(2)
    ]
    by_genre = catalogue.movies.ListMovies(movie_pb2.ListMoviesRequest(genre="Western-x"))
    assert [m.id for m in by_genre.movies] == [m.id for m in western]
    by_cast = catalogue.movies.ListMovies(movie_pb2.ListMoviesRequest(cast_id=star.id))
    assert [m.id for m in by_cast.movies] == [m.id for m in starring]

    first = catalogue.movies.ListMovies(movie_pb2.ListMoviesRequest(genre="Western-x", page_size=2))
    assert len(first.movies) == 2 and first.next_page_token
    second = catalogue.movies.ListMovies(
        movie_pb2.ListMoviesRequest(
            genre="Western-x", page_size=2, page_token=first.next_page_token
        )
    )
    assert [m.id for m in [*first.movies, *second.movies]] == [m.id for m in western]
    assert not second.next_page_token
    violations = expect_error(
        lambda: catalogue.movies.ListMovies(
            movie_pb2.ListMoviesRequest(genre="Noir-x", page_token=first.next_page_token)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "page_token" in violations


def test_batch_get_and_delete_movies(catalogue: Catalogue) -> None:
    one, two = new_movie(catalogue, title="One"), new_movie(catalogue, title="Two")
    found = catalogue.movies.BatchGetMovies(
        movie_pb2.BatchGetMoviesRequest(ids=[two.id, "missing", one.id])
    ).movies
    assert [m.id for m in found] == [two.id, one.id]
    catalogue.movies.DeleteMovie(movie_pb2.DeleteMovieRequest(id=one.id), metadata=catalogue.admin)
    expect_error(
        lambda: catalogue.movies.GetMovie(movie_pb2.GetMovieRequest(id=one.id)),
        grpc.StatusCode.NOT_FOUND,
    )


def test_catalogue_writes_need_an_admin(catalogue: Catalogue) -> None:
    create = movie_pb2.CreateMovieRequest(movie=movie_pb2.Movie(title="x", price=usd(1)))
    expect_error(lambda: catalogue.movies.CreateMovie(create), grpc.StatusCode.UNAUTHENTICATED)
    expect_error(
        lambda: catalogue.movies.CreateMovie(create, metadata=catalogue.user),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    expect_error(
        lambda: catalogue.casts.CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="x")), metadata=catalogue.user
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


# --- the cast service down ---------------------------------------------------------------


def test_cast_service_down_gives_unavailable_and_writes_nothing(
    keys: SigningKeys, databases: DatabaseFactory
) -> None:
    env = keys.env()
    cast = start_service("cast", service_settings("cast", databases("cast_down"), env))
    movie = start_service(
        "movie",
        service_settings(
            "movie",
            databases("movie_down"),
            {**env, "CAST_SERVICE_ADDR": cast.address, "CINEMA_PEER_TIMEOUT_SECONDS": "2"},
        ),
    )
    try:
        admin = keys.metadata("admin", Role.ADMIN)
        someone = cast_pb2_grpc.CastServiceStub(cast.channel()).CreateCast(
            cast_pb2.CreateCastRequest(cast=cast_pb2.Cast(name="Soon gone")), metadata=admin
        )
        cast.stop()
        movies = movie_pb2_grpc.MovieServiceStub(movie.channel())
        with pytest.raises(grpc.RpcError) as caught:
            movies.CreateMovie(
                movie_pb2.CreateMovieRequest(
                    movie=movie_pb2.Movie(title="Orphan", price=usd(5), cast_ids=[someone.id])
                ),
                metadata=admin,
                timeout=10,
            )
        error = call_error(caught.value)
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert error.reason == "PEER_UNAVAILABLE"
        listed = movies.ListMovies(movie_pb2.ListMoviesRequest()).movies
        assert list(listed) == [], "nothing may be written when the cast check fails"
        # A movie without cast needs no cast check and still works.
        movies.CreateMovie(
            movie_pb2.CreateMovieRequest(movie=movie_pb2.Movie(title="Solo", price=usd(5))),
            metadata=admin,
        )
    finally:
        movie.stop()
        cast.stop()
