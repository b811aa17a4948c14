"""The suite's chart: throughput and p99 per path, Cinema beside the baseline, as SVG.

Plain SVG written by hand (no plotting library): two panels of horizontal bars, one row
per path, a bar for Cinema and, where the baseline has the same path, one for the
FastAPI + uvicorn + nginx design beside it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

CINEMA = "#2f6db5"
BASELINE = "#d9822b"
_ROW = 34
_BAR = 12
_LABEL_WIDTH = 250
_PANEL_WIDTH = 330
_GAP = 40
_TOP = 56


@dataclass(frozen=True)
class PathFigures:
    """One row of the chart: a path, and Cinema's and the baseline's figures on it."""

    label: str
    cinema_rate: float
    cinema_p99_ms: float
    baseline_rate: float = math.nan
    baseline_p99_ms: float = math.nan


def _bars(rows: Sequence[PathFigures], x0: float, title: str, pick: str, unit: str) -> list[str]:
    values = [
        v
        for row in rows
        for v in (getattr(row, f"cinema_{pick}"), getattr(row, f"baseline_{pick}"))
        if not math.isnan(v)
    ]
    top = max(values) if values else 1.0
    out = [
        f'<text x="{x0}" y="{_TOP - 16}" font-size="13" font-weight="bold">'
        f"{html.escape(title)}</text>"
    ]
    for index, row in enumerate(rows):
        y = _TOP + index * _ROW
        for offset, (value, colour) in enumerate(
            (
                (getattr(row, f"cinema_{pick}"), CINEMA),
                (getattr(row, f"baseline_{pick}"), BASELINE),
            )
        ):
            if math.isnan(value):
                continue
            width = max(1.0, (_PANEL_WIDTH - 70) * value / top)
            bar_y = y + offset * (_BAR + 2)
            out.append(
                f'<rect x="{x0}" y="{bar_y}" width="{width:.1f}" height="{_BAR}" fill="{colour}"/>'
            )
            out.append(
                f'<text x="{x0 + width + 4:.1f}" y="{bar_y + _BAR - 2}" font-size="10">'
                f"{value:,.{0 if value >= 100 else 1}f} {unit}</text>"
            )
    return out


def render_svg(rows: Sequence[PathFigures], subtitle: str) -> str:
    """The chart as an SVG document."""
    height = _TOP + len(rows) * _ROW + 30
    width = _LABEL_WIDTH + 2 * _PANEL_WIDTH + _GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        '<text x="8" y="18" font-size="14" font-weight="bold">Cinema beside the FastAPI + '
        "nginx baseline</text>",
        f'<text x="8" y="{height - 10}" font-size="10">{html.escape(subtitle)}</text>',
        f'<rect x="{width - 230}" y="8" width="10" height="10" fill="{CINEMA}"/>',
        f'<text x="{width - 216}" y="17" font-size="11">Cinema</text>',
        f'<rect x="{width - 160}" y="8" width="10" height="10" fill="{BASELINE}"/>',
        f'<text x="{width - 146}" y="17" font-size="11">FastAPI + nginx</text>',
    ]
    for index, row in enumerate(rows):
        y = _TOP + index * _ROW + _BAR
        parts.append(f'<text x="8" y="{y}" font-size="11">{html.escape(row.label)}</text>')
    parts += _bars(rows, _LABEL_WIDTH, "throughput (calls/s, higher is better)", "rate", "/s")
    parts += _bars(
        rows, _LABEL_WIDTH + _PANEL_WIDTH + _GAP, "p99 latency (ms, lower is better)", "p99_ms",
        "ms",
    )  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
