"""What the tombstone check costs a write: ``python -m bench.tombstones [--calls N]``.

CreateMovie and UpdateMovie (with cast ids) and CreateOrder check the ids they name in
their transaction (services/common/tombstones.py): on PostgreSQL one statement that takes
a shared advisory lock per id and one that reads the tombstones. This measures that check
on its own, on a fresh loopback PostgreSQL database with 10,000 tombstones (analysed), in a loop of
transactions like a write's, each transaction once with the check and once without
(interleaved), for an order of 1, 5 and 50 movies (and its buyer). The figures are wall
time and this process's CPU time per check (the difference of the two loops), beside
the transaction without it (BEGIN, one statement, ROLLBACK). Only loopback; it stops by itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import time
import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from bench.processes import postgres_databases
from services.common import tombstones
from services.common.db import make_engine


def _loop(
    engine: sa.Engine, calls: int, wanted: dict[str, list[str]] | None
) -> tuple[float, float]:
    """Seconds of wall and CPU time for ``calls`` transactions: BEGIN, one statement (the
    write's own, here ``SELECT 1``), the check if ``wanted``, ROLLBACK."""
    one = sa.text("SELECT 1")
    with engine.connect() as connection:
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            with connection.begin():
                connection.execute(one)
                if wanted is not None:
                    tombstones.Tombstones(connection).buried(wanted)
                connection.rollback()
        return time.perf_counter() - started, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tombstones", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--svg", type=pathlib.Path, help="write a bar chart of the figures here")
    args = parser.parse_args(argv)
    figures: list[tuple[int, float, float]] = []
    with postgres_databases(["tombstones"]) as (_, urls):
        engine = make_engine(urls["tombstones"])
        metadata = sa.MetaData()
        table = tombstones.define(metadata)
        metadata.create_all(engine)
        now = dt.datetime.now(dt.UTC)
        with engine.begin() as connection:
            connection.execute(
                sa.insert(table),
                [
                    {"kind": "movie", "id": uuid.uuid4().hex, "delete_time": now}
                    for _ in range(10_000)
                ],
            )
            connection.execute(sa.text("ANALYZE tombstones"))  # as autovacuum keeps it
        print(f"{args.calls} transactions per figure; µs per transaction")
        print("| movies | transaction alone (wall) | check (wall) | check (client CPU) |")
        print("| ---: | ---: | ---: | ---: |")
        for movies in (1, 5, 50):
            wanted = {
                "user": [uuid.uuid4().hex],
                "movie": [uuid.uuid4().hex for _ in range(movies)],
            }
            _loop(engine, 200, wanted)  # warm: statements compiled, connection pooled
            bare = checked = (0.0, 0.0)
            for _ in range(2):  # interleaved halves
                b = _loop(engine, args.calls // 2, None)
                c = _loop(engine, args.calls // 2, wanted)
                bare = (bare[0] + b[0], bare[1] + b[1])
                checked = (checked[0] + c[0], checked[1] + c[1])
            per = 1e6 / args.calls
            figures.append((movies, (checked[0] - bare[0]) * per, (checked[1] - bare[1]) * per))
            print(
                f"| {movies} | {bare[0] * per:,.0f} | {(checked[0] - bare[0]) * per:,.0f} | "
                f"{(checked[1] - bare[1]) * per:,.0f} |"
            )
        engine.dispose()
    if args.svg:
        args.svg.write_text(chart(figures))
        print(f"wrote {args.svg}")


def chart(figures: Sequence[tuple[int, float, float]]) -> str:
    """Wall and client CPU time of the check, per order size, as grouped bars."""
    top = max(wall for _, wall, _ in figures) * 1.2
    width, height = 560, 240
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="16" y="22" font-size="15">The tombstone check, µs per write (PostgreSQL)</text>',
        '<rect x="380" y="34" width="12" height="12" fill="#8da0cb"/>'
        '<text x="398" y="45">wall</text>',
        '<rect x="450" y="34" width="12" height="12" fill="#fc8d62"/>'
        '<text x="468" y="45">client CPU</text>',
    ]
    for number, (movies, wall, cpu) in enumerate(figures):
        x = 60 + number * 160
        for offset, (value, fill) in enumerate(((wall, "#8da0cb"), (cpu, "#fc8d62"))):
            h = (height - 90) * value / top
            y = height - 40 - h
            bar_x = x + offset * 55
            parts += [
                f'<rect x="{bar_x}" y="{y:.1f}" width="50" height="{h:.1f}" fill="{fill}"/>',
                f'<text x="{bar_x + 25}" y="{y - 5:.1f}" text-anchor="middle">{value:,.0f}</text>',
            ]
        label = f"{movies} movie{'s' if movies > 1 else ''}"
        parts.append(f'<text x="{x + 52}" y="{height - 20}" text-anchor="middle">{label}</text>')
    return "\n".join([*parts, "</svg>", ""])


if __name__ == "__main__":
    main()
