"""Inline SVG line charts rendered on the server: no script, no asset, nothing from the internet.

One function, :func:`line_chart`: a few series over a shared list of days, optional horizontal
reference lines (thresholds), a legend. Missing points (``None``) break a line. The result is
``markupsafe.Markup`` (every text in it is escaped here), ready for a template.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]


@dataclass(frozen=True)
class Guide:
    """A horizontal reference line (a threshold) with its label."""

    value: float
    label: str
    color: str = "#999"


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if v else "0"


def line_chart(
    days: Sequence[dt.date],
    series: Sequence[Series],
    *,
    guides: Sequence[Guide] = (),
    title: str = "",
    y_max: float | None = None,
    width: int = 720,
    height: int = 260,
    testid: str = "chart",
) -> Markup:
    """An SVG of ``series`` (each one value per day of ``days``)."""
    left, right, top, bottom = 48, 28, 24, 36
    legend_rows = (len(series) + 2) // 3
    total_height = height + 18 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series for v in s.values if v is not None]
    hi = max([*values, *(g.value for g in guides), y_max or 0.0, 1e-9])
    if y_max is not None:
        hi = max(y_max, hi)
    n = len(days)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - v / hi)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-testid="{escape(testid)}" '
        f'viewBox="0 0 {width} {total_height}" width="{width}" height="{total_height}" role="img" '
        f'aria-label="{escape(title)}">'
    ]
    if title:
        out.append(f'<text x="{left}" y="14" class="chart-title">{escape(title)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>')
    for frac in (0.0, 0.5, 1.0):
        v = hi * frac
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="chart-axis">{_fmt(v)}</text>')
    if n:
        ticks = sorted({0, n - 1, *range(0, n, max(1, n // 6))})
        for i in ticks:
            out.append(
                f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="chart-axis">'
                f"{escape(days[i].strftime('%m-%d'))}</text>"
            )
    for g in guides:
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(g.value):.1f}" y2="{y(g.value):.1f}" '
            f'stroke="{escape(g.color)}" stroke-dasharray="4 3"/>'
            f'<text x="{left + plot_w - 2}" y="{y(g.value) - 3:.1f}" text-anchor="end" class="chart-axis">'
            f"{escape(g.label)}</text>"
        )
    for k, s in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        segments: list[list[str]] = [[]]
        for i, v in enumerate(s.values[:n]):
            if v is None:
                segments.append([])
                continue
            segments[-1].append(f"{x(i):.1f},{y(v):.1f}")
        for seg in segments:
            if len(seg) > 1:
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{" ".join(seg)}"/>')
            elif len(seg) == 1:
                cx, cy = seg[0].split(",")
                out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{color}"/>')
        row, col = divmod(k, 3)
        lx, ly = left + col * (plot_w / 3), height + row * 18
        out.append(
            f'<rect x="{lx:.1f}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14:.1f}" y="{ly}" class="chart-legend">{escape(s.name)}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))
