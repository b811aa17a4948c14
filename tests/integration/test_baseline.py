"""The baseline (FastAPI movie and cast apps behind nginx) on a real PostgreSQL: Cinema's
JSON for a seeded movie, CreateMovie's one batched cast check, auth, and a clean stop.

Skipped only when nginx is not installed and ``CI`` is not set; under CI a missing nginx
(Debian's ``nginx`` package) fails the test.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from bench import catalogue, fixtures, pg, seed
from bench.baselines import nginx, runner
from services.common.context import Role
from tests.support.postgres import require_server
from tests.support.tokens import SigningKeys

pytestmark = pytest.mark.postgres


def _require_nginx() -> None:
    if shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin"):
        return
    message = f"nginx is not installed (apt-get install -y {nginx.APT_PACKAGE})"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run the baseline test")
    pytest.skip(message)


@pytest.fixture(scope="module")
def baseline(
    keys: SigningKeys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[runner.Baseline]:
    _require_nginx()
    server = require_server()
    with contextlib.ExitStack() as stack:
        movie_url = stack.enter_context(server.fresh_database("baseline_movie"))
        cast_url = stack.enter_context(server.fresh_database("baseline_cast"))
        started = runner.start_baseline(
            tmp_path_factory.mktemp("baseline"), movie_url, cast_url, keys.public_path
        )
        stack.callback(started.stop)
        yield started


@pytest.fixture(scope="module")
def admin_token(keys: SigningKeys) -> str:
    return keys.token("admin-1", Role.ADMIN)


@pytest.fixture(scope="module")
def cast_ids(baseline: runner.Baseline, admin_token: str) -> tuple[str, ...]:
    # The suite's own fixture, through nginx, as against Cinema's Envoy.
    return fixtures.ensure_casts(baseline.target, admin_token)


def _call(
    baseline: runner.Baseline, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    return fixtures.http_json(baseline.target, method, path, body, token=token, timeout=10)


def _movie(cast_ids: list[str]) -> dict[str, Any]:
    return {
        "title": "Heat",
        "plot": "A heist.",
        "genres": ["crime"],
        "castIds": cast_ids,
        "price": {"currencyCode": "USD", "amountMinor": "1299"},
    }


def test_a_seeded_movie_reads_as_cinemas_json(
    baseline: runner.Baseline, cast_ids: tuple[str, ...]
) -> None:
    [movie_id] = seed.seed_movies(baseline.movie_url, 1, cast_ids)
    status, body = _call(baseline, "GET", f"/api/v1/movies/{movie_id}")
    assert status == 200, body
    assert body == {
        "id": movie_id,
        "title": "Benchmark movie 000000",
        "plot": catalogue.PLOT,
        "genres": list(catalogue.GENRES),
        "castIds": list(cast_ids),
        "price": {"currencyCode": "USD", "amountMinor": "999"},
        "createTime": "2025-01-01T12:00:00Z",
        "updateTime": "2025-01-01T12:00:00Z",
    }
    assert movie_id in runner.movie_ids(baseline.movie_url)
    missing_status, missing = _call(baseline, "GET", "/api/v1/movies/no-such-movie")
    assert missing_status == 404
    assert missing["code"] == 5


def test_create_names_the_unknown_cast_id(
    baseline: runner.Baseline, admin_token: str, cast_ids: tuple[str, ...]
) -> None:
    ghost = "0" * 32
    status, body = _call(
        baseline, "POST", "/api/v1/movies", _movie([cast_ids[0], ghost]), admin_token
    )
    assert status == 400, body
    assert body["code"] == 3
    violations = {
        v["field"]: v["description"]
        for detail in body["details"]
        for v in detail.get("fieldViolations", [])
    }
    assert list(violations) == ["movie.cast_ids[1]"]
    assert ghost in violations["movie.cast_ids[1]"]


def test_create_with_known_cast_ids_stores_the_movie(
    baseline: runner.Baseline, admin_token: str, cast_ids: tuple[str, ...]
) -> None:
    status, created = _call(baseline, "POST", "/api/v1/movies", _movie(list(cast_ids)), admin_token)
    assert status == 200, created
    assert created["castIds"] == list(cast_ids)
    assert created["price"] == {"currencyCode": "USD", "amountMinor": "1299"}
    status, fetched = _call(baseline, "GET", f"/api/v1/movies/{created['id']}")
    assert status == 200
    assert fetched == created
    connection = pg.connect(baseline.movie_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT cast_id FROM movie_casts WHERE movie_id = %s", (created["id"],))
            assert sorted(r[0] for r in cursor.fetchall()) == sorted(cast_ids)
            cursor.execute("SELECT genre FROM movie_genres WHERE movie_id = %s", (created["id"],))
            assert [r[0] for r in cursor.fetchall()] == ["crime"]
    finally:
        connection.close()


def test_create_needs_an_admin_token(
    baseline: runner.Baseline, keys: SigningKeys, cast_ids: tuple[str, ...]
) -> None:
    status, body = _call(baseline, "POST", "/api/v1/movies", _movie(list(cast_ids)))
    assert status == 401, body
    assert body["code"] == 16
    status, body = _call(baseline, "POST", "/api/v1/movies", _movie([]), token="not-a-jwt")
    assert status == 401, body
    user = keys.token("user-1", Role.USER)
    status, body = _call(baseline, "POST", "/api/v1/movies", _movie([]), token=user)
    assert status == 403, body
    assert body["code"] == 7


def test_stop_leaves_no_process_behind(baseline: runner.Baseline) -> None:
    pids = [pid for group in baseline.pids().values() for pid in group]
    assert len(pids) >= 4  # two apps, the nginx master and at least one worker
    baseline.stop()
    alive = [pid for pid in pids if pathlib.Path(f"/proc/{pid}").exists() and _running(pid)]
    assert alive == []


def _running(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
