"""The start-up fast path of migrations: heads read from the revision files."""

from __future__ import annotations

import pathlib

import pytest

from services.common import migrations


def _revision(folder: pathlib.Path, name: str, revision: str, down: str | None) -> None:
    (folder / f"{name}.py").write_text(
        f"revision: str = {revision!r}\ndown_revision: str | None = {down!r}\n"
        "def upgrade() -> None: ...\n"
    )


def test_every_service_has_one_head() -> None:
    for service in ("movie", "cast", "user", "order"):
        assert len(migrations.head_revisions(service)) == 1


def test_the_head_is_the_revision_nothing_builds_on(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    _revision(versions, "0001_first", "0001", None)
    _revision(versions, "0002_second", "0002", "0001")
    _revision(versions, "0003_third", "0003", "0002")
    monkeypatch.setattr(migrations, "script_location", lambda service: tmp_path)
    assert migrations.head_revisions("movie") == {"0003"}
