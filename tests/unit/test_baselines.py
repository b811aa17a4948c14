"""The baseline's pure parts: the nginx config, Cinema's JSON shapes and errors, the
movie checks. No process, no database."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import re

import pytest

from bench.baselines import api, movie_app, nginx, storage
from bench.processes import StartError
from services.common import errors


def _layout(tmp_path: pathlib.Path, **overrides: object) -> nginx.NginxLayout:
    values: dict[str, object] = {
        "listen_port": 18080,
        "routes": {
            "/api/v1/movies": ("baseline_movie", 18081),
            "/api/v1/casts": ("baseline_cast", 18082),
        },
        "work_dir": tmp_path,
    }
    values.update(overrides)
    return nginx.NginxLayout(**values)  # type: ignore[arg-type]


def test_nginx_config_keeps_upstream_connections_alive(tmp_path: pathlib.Path) -> None:
    config = nginx.render(_layout(tmp_path))
    upstreams = re.findall(r"upstream (\w+) \{(.*?)\}", config, flags=re.S)
    assert {name for name, _ in upstreams} == {"baseline_movie", "baseline_cast"}
    for _, body in upstreams:
        assert f"keepalive {nginx.UPSTREAM_KEEPALIVE};" in body
    locations = re.findall(r"location (/api/v1/\w+) \{(.*?)\}", config, flags=re.S)
    assert [prefix for prefix, _ in locations] == ["/api/v1/movies", "/api/v1/casts"]
    for _, body in locations:
        assert "proxy_http_version 1.1;" in body
        assert 'proxy_set_header Connection "";' in body
    assert "access_log off;" in config
    assert "daemon off;" in config
    assert "master_process on;" in config


def test_nginx_config_listens_and_connects_on_loopback_only(tmp_path: pathlib.Path) -> None:
    config = nginx.render(_layout(tmp_path))
    listens = re.findall(r"^\s*listen (\S+?)[ ;]", config, flags=re.M)
    assert listens == ["127.0.0.1:18080"]
    servers = re.findall(r"^\s*server (\S+);", config, flags=re.M)
    assert sorted(servers) == ["127.0.0.1:18081", "127.0.0.1:18082"]
    with pytest.raises(ValueError, match="loopback"):
        nginx.render(_layout(tmp_path, host="0.0.0.0"))


def test_nginx_config_keeps_its_files_in_the_work_dir(tmp_path: pathlib.Path) -> None:
    config = nginx.render(_layout(tmp_path))
    paths = re.findall(r"^\s*(?:pid|error_log|\w+_temp_path) (\S+?)[ ;]", config, flags=re.M)
    assert len(paths) == 7
    assert all(pathlib.Path(p).is_relative_to(tmp_path) for p in paths)
    assert "user " not in config
    assert "user root;" in nginx.render(_layout(tmp_path, run_as_root=True))


def test_nginx_refuses_one_upstream_on_two_ports(tmp_path: pathlib.Path) -> None:
    routes = {"/a": ("same", 1), "/b": ("same", 2)}
    with pytest.raises(ValueError, match="two ports"):
        nginx.render(_layout(tmp_path, routes=routes))


def test_missing_nginx_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda *args, **kwargs: None)
    with pytest.raises(StartError, match=r"apt-get install -y nginx"):
        nginx.binary()


def test_a_movie_row_is_cinemas_proto3_json() -> None:
    stamp = dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    row: storage.Row = ("m1", "Alien", "", [], ["c1"], "USD", 999, stamp, stamp)
    body = json.loads(storage.movie_from_row(row).model_dump_json(exclude_defaults=True))
    assert body == {
        "id": "m1",
        "title": "Alien",
        "castIds": ["c1"],
        "price": {"currencyCode": "USD", "amountMinor": "999"},
        "createTime": "2025-01-01T12:00:00Z",
        "updateTime": "2025-01-01T12:00:00Z",
    }
    assert api.RESPONSE_OPTIONS == {"response_model_exclude_defaults": True}


def test_a_movie_body_takes_both_spellings_and_a_string_amount() -> None:
    camel = api.MovieIn.model_validate(
        {"title": "A", "castIds": ["c"], "price": {"currencyCode": "USD", "amountMinor": "5"}}
    )
    snake = api.MovieIn.model_validate(
        {"title": "A", "cast_ids": ["c"], "price": {"currency_code": "USD", "amount_minor": 5}}
    )
    assert camel == snake
    assert camel.price is not None and camel.price.amount_minor == 5


def test_cinemas_rules_refuse_a_movie_without_title_or_price() -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        movie_app.checked_fields(api.MovieIn(title=" "))
    assert {v.field for v in refused.value.violations} == {"movie.title", "movie.price"}


def test_unknown_cast_ids_are_named_with_their_position() -> None:
    movie_app.check_known(["a", "b"], {"a", "b"})
    with pytest.raises(errors.InvalidArgument) as refused:
        movie_app.check_known(["a", "ghost"], {"a"})
    [violation] = refused.value.violations
    assert violation.field == "movie.cast_ids[1]"
    assert "ghost" in violation.description


def test_errors_are_cinemas_json_error_bodies() -> None:
    status, body = api.error_body(
        errors.InvalidArgument([errors.FieldViolation("movie.title", "is required")])
    )
    assert status == 400
    assert body["code"] == 3
    assert body["details"][0]["@type"].endswith("google.rpc.ErrorInfo")
    assert body["details"][1]["fieldViolations"] == [
        {"field": "movie.title", "description": "is required"}
    ]
    assert api.error_body(errors.NotFound("movie", "m1"))[0] == 404
    assert api.error_body(errors.Unauthenticated("no token"))[1]["code"] == 16
    assert api.error_body(errors.PermissionDenied("not admin"))[:1] == (403,)
    assert api.error_body(errors.Unavailable("cast down"))[1]["code"] == 14


def test_settings_need_a_postgresql_url_and_a_key(tmp_path: pathlib.Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(b"pem")
    with pytest.raises(api.SettingsError):
        api.Settings.from_env({"BASELINE_JWT_PUBLIC_KEY_FILE": str(key)})
    with pytest.raises(api.SettingsError):
        api.Settings.from_env({"BASELINE_DATABASE_URL": "sqlite:///x.db"})
    settings = api.Settings.from_env(
        {
            "BASELINE_DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1/movie",
            "BASELINE_JWT_PUBLIC_KEY_FILE": str(key),
        }
    )
    assert settings.db_access == api.DEFAULT_DB_ACCESS == "asyncpg"
    assert storage.asyncpg_dsn(settings.database_url) == "postgresql://postgres@127.0.0.1/movie"
