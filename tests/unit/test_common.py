"""Pure logic shared by every service: pagination, update masks, money, ids, settings,
and the mapping of domain errors to gRPC statuses."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2

from services.common import errors, pagination, status
from services.common.ids import new_id
from services.common.masks import resolve_update_mask
from services.common.money import Money, check_money
from services.common.settings import Settings, SettingsError


def test_page_size_defaults_and_bounds() -> None:
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(1) == 1
    assert pagination.page_size(1000) == 1000
    # AIP-158: a size above the maximum is lowered to it, not refused.
    for large in (1001, 5000, 2**31 - 1):
        assert pagination.page_size(large) == pagination.MAX_PAGE_SIZE
    for bad in (-1, -(2**31)):
        with pytest.raises(errors.InvalidArgument) as caught:
            pagination.page_size(bad)
        assert caught.value.violations[0].field == "page_size"


def test_page_token_round_trip_and_binding_to_filters() -> None:
    token = pagination.encode_token("abc", {"genre": "Drama"})
    assert pagination.decode_token(token, {"genre": "Drama"}) == "abc"
    assert pagination.decode_token("", {"genre": "Drama"}) is None
    with pytest.raises(errors.InvalidArgument, match="other filters"):
        pagination.decode_token(token, {"genre": "Horror"})
    for garbage in ("%%%", "e30", "bm90IGpzb24", token[:-3]):
        with pytest.raises(errors.InvalidArgument):
            pagination.decode_token(garbage, {"genre": "Drama"})


def test_update_mask_empty_means_populated_fields() -> None:
    allowed = {"title", "plot"}
    assert resolve_update_mask([], allowed=allowed, populated=["title", "id"]) == {"title"}
    assert resolve_update_mask(["plot"], allowed=allowed, populated=[]) == {"plot"}
    with pytest.raises(errors.InvalidArgument) as caught:
        resolve_update_mask(["id", "*"], allowed=allowed, populated=[])
    assert [v.field for v in caught.value.violations] == ["update_mask", "update_mask"]
    with pytest.raises(errors.InvalidArgument, match="nothing to update"):
        resolve_update_mask([], allowed=allowed, populated=["id"])


def test_money_rules() -> None:
    violations = errors.Violations()
    assert check_money("EUR", 1999, "price", violations) == Money("EUR", 1999)
    check_money("eur", -1, "price", violations)
    check_money("EURO", 10**11, "price", violations)
    assert [v.field for v in violations.items] == [
        "price.currency_code",
        "price.amount_minor",
        "price.currency_code",
        "price.amount_minor",
    ]
    assert Money("USD", 250).times(3) == Money("USD", 750)


def test_ids_are_unique_and_time_ordered() -> None:
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and i[12] == "7" for i in ids)  # UUID version 7
    # The first 48 bits are the creation millisecond: ids sort by creation time.
    millis = [i[:12] for i in ids]
    assert millis == sorted(millis)
    # Within one process they sort in the order they were made, the same millisecond too.
    assert ids == sorted(ids)
    assert all(int(i[16], 16) >> 2 == 0b10 for i in ids)  # RFC 9562 variant


def test_error_mapping_carries_reason_and_field_violations() -> None:
    error = errors.InvalidArgument([errors.FieldViolation("movie.title", "is required")])
    rpc_status = status.to_rpc_status(error)
    assert rpc_status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.bad_request_violations(rpc_status) == error.violations
    info = error_details_pb2.ErrorInfo()
    rpc_status.details[0].Unpack(info)
    assert info.reason == "INVALID_ARGUMENT"
    assert info.domain == "cinema.v1"
    assert status.status_code_for(errors.NotFound("movie", "x")) == grpc.StatusCode.NOT_FOUND
    assert status.status_code_for(errors.DomainError("?")) == grpc.StatusCode.INTERNAL
    assert status.internal_status().message == "internal error"


def _env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
    public = tmp_path / "key.pub.pem"
    public.write_text("-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n")
    return {"CINEMA_JWT_PUBLIC_KEY_FILE": str(public), **extra}


def test_settings_defaults(tmp_path: pathlib.Path) -> None:
    settings = Settings.from_env("movie", _env(tmp_path, CINEMA_DATA_DIR=str(tmp_path)))
    assert settings.database_url == f"sqlite:///{tmp_path / 'movie.db'}"
    assert settings.cast_service_addr == "127.0.0.1:8080"
    assert settings.argon2.time_cost == 3  # production strength unless told otherwise
    assert settings.worker_threads == 4
    assert settings.db_pool_size == 5  # one connection per worker, one for the events thread
    assert settings.nats_url == "nats://127.0.0.1:4222"
    assert settings.events_enabled
    assert settings.mail_url == f"file://{(tmp_path / 'mail').resolve()}"
    assert settings.public_url == "http://127.0.0.1:8080"


def test_mail_settings_are_checked_without_echoing_a_password(tmp_path: pathlib.Path) -> None:
    secret = "hunter2-mail-password"
    for url in (f"ftp://user:{secret}@mail.test", f"smtp:/user:{secret}@x", "file://relative/dir"):
        with pytest.raises(SettingsError, match="CINEMA_MAIL_URL") as caught:
            Settings.from_env("movie", _env(tmp_path, CINEMA_MAIL_URL=url))
        assert secret not in str(caught.value)
    smtp = f"smtps://user:{secret}@mail.test:465"
    settings = Settings.from_env("movie", _env(tmp_path, CINEMA_MAIL_URL=smtp))
    assert settings.mail_url == smtp and secret not in repr(settings)
    with pytest.raises(SettingsError, match="CINEMA_PUBLIC_URL"):
        Settings.from_env("movie", _env(tmp_path, CINEMA_PUBLIC_URL="shop.example"))
    public = Settings.from_env("movie", _env(tmp_path, CINEMA_PUBLIC_URL="https://shop.test/"))
    assert public.public_url == "https://shop.test"


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"CAST_SERVICE_ADDR": "nohost"}, "CAST_SERVICE_ADDR"),
        ({"CINEMA_GRACE_SECONDS": "soon"}, "CINEMA_GRACE_SECONDS"),
        ({"CINEMA_DB_POOL_SIZE": "0"}, "CINEMA_DB_POOL_SIZE"),
        ({"NATS_URL": "localhost:4222"}, "NATS_URL"),
        ({"CINEMA_EVENTS": "maybe"}, "CINEMA_EVENTS"),
        ({"CINEMA_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"}, "CINEMA_JWT_PUBLIC_KEY_FILE"),
        ({"CINEMA_LOG_FORMAT": "xml"}, "CINEMA_LOG_FORMAT"),
        ({"CINEMA_WORKER_THREADS": "8", "CINEMA_DB_POOL_SIZE": "4"}, "CINEMA_DB_POOL_SIZE"),
    ],
)
def test_settings_errors_name_the_variable(
    tmp_path: pathlib.Path, extra: dict[str, str], variable: str
) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env("movie", _env(tmp_path, **extra))


def test_settings_require_keys_and_paired_admin_credentials(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SettingsError, match="CINEMA_JWT_PUBLIC_KEY"):
        Settings.from_env("movie", {})
    with pytest.raises(SettingsError, match="CINEMA_JWT_PRIVATE_KEY"):
        Settings.from_env("user", _env(tmp_path))
    private = tmp_path / "key.pem"
    private.write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    env = _env(tmp_path, CINEMA_JWT_PRIVATE_KEY_FILE=str(private))
    with pytest.raises(SettingsError, match="CINEMA_ADMIN_PASSWORD"):
        Settings.from_env("user", {**env, "CINEMA_ADMIN_EMAIL": "admin@example.com"})


def test_without_an_otlp_endpoint_nothing_is_traced_or_exported() -> None:
    from services.common import tracing

    assert tracing.configure("movie", environ={"OTEL_SERVICE_NAME": "x"}) is False
    assert tracing.enabled() is False
    assert tracing.server_interceptors() == []
    assert tracing.current_ids() is None
    tracing.record_status(grpc.StatusCode.INTERNAL, "no span, no error")
    tracing.shutdown()


@pytest.fixture
def served_call_ratio() -> Iterator[Callable[[str], None]]:
    """Sets the served-call ratio as ``configure`` would (``OTEL_TRACES_SAMPLER_ARG``)."""
    from services.common import tracing

    def use(ratio: str) -> None:
        tracing._sampler({"OTEL_TRACES_SAMPLER_ARG": ratio})

    yield use
    tracing._root_bound = None


def _parent(flags: str) -> object:
    from opentelemetry import propagate

    return propagate.extract({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-{flags}"})


def test_a_caller_that_samples_is_recorded_and_one_that_does_not_is_not(
    served_call_ratio: Callable[[str], None],
) -> None:
    from opentelemetry import trace

    from services.common import tracing

    served_call_ratio("0.0")  # roots are never drawn: only the caller's flag decides
    assert tracing.unsampled_context(_parent("01")) is None
    quiet = tracing.unsampled_context(_parent("00"))
    assert quiet is not None
    carried = trace.get_current_span(quiet).get_span_context()
    assert carried.trace_id == int("ab" * 16, 16), "the caller's trace goes on"
    assert not carried.trace_flags.sampled
    assert not trace.get_current_span(quiet).is_recording()


def test_a_root_follows_the_ratio(served_call_ratio: Callable[[str], None]) -> None:
    from opentelemetry import trace

    from services.common import tracing

    served_call_ratio("1.0")
    assert all(tracing.unsampled_context(None) is None for _ in range(200))
    served_call_ratio("0.0")
    contexts = [tracing.unsampled_context(None) for _ in range(200)]
    assert all(c is not None for c in contexts)
    ids = {trace.get_current_span(c).get_span_context().trace_id for c in contexts}
    assert len(ids) == 200, "each unsampled root is a trace of its own"
    served_call_ratio("0.5")
    recorded = sum(tracing.unsampled_context(None) is None for _ in range(4000))
    assert 1700 < recorded < 2300  # 2000 expected; 9 standard deviations either side


def test_another_sampler_decides_in_the_sdk(served_call_ratio: Callable[[str], None]) -> None:
    from services.common import tracing

    served_call_ratio("0.0")
    tracing._sampler({"OTEL_TRACES_SAMPLER": "always_on"})
    assert tracing.unsampled_context(_parent("00")) is None
    assert tracing.unsampled_context(None) is None
