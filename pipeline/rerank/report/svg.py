"""Hand-written inline SVG charts for the run report: line charts, histograms, horizontal bars
and a stacked bar. Plain strings, no plotting library and nothing fetched: the report opens in a
browser on a machine without network. Every chart is an `<svg class="chart" data-chart=ID>`."""

from __future__ import annotations

import math
from html import escape

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]
WIDTH, HEIGHT = 880, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 44, 42


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 times a power of ten apart)."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, max(last, first + 1) + 1)]


def label(value: float) -> str:
    """A short axis label: 1.2k, 3.4M, 0.25."""
    a = abs(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _open(chart_id: str, title: str, height: int = HEIGHT) -> list[str]:
    return [
        f'<svg class="chart" data-chart="{escape(chart_id)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text x="{LEFT}" y="18" class="ct">{escape(title)}</text>',
    ]


def _axes(
    x_ticks: list[float], y_ticks: list[float], sx, sy, x_label: str, y_label: str, height: int = HEIGHT
) -> list[str]:
    out = []
    bottom = height - BOTTOM
    for t in y_ticks:
        y = sy(t)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label(t)}</text>')
    for t in x_ticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}" class="axis"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 16}" text-anchor="middle">{label(t)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" class="axis"/>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" class="axis"/>')
    out.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
    )
    out.append(
        f'<text transform="translate(14 {(TOP + bottom) / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )
    return out


def _legend(names: list[str]) -> list[str]:
    """Coloured keys on the line under the title."""
    out, x = [], float(LEFT)
    for i, name in enumerate(names):
        text = escape(name[:40])
        out.append(f'<rect x="{x:.0f}" y="25" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>')
        out.append(f'<text x="{x + 13:.0f}" y="34">{text}</text>')
        x += 24 + 6.5 * len(name[:40])
    return out


def line_chart(
    chart_id: str,
    title: str,
    x: list[float],
    series: dict[str, list[float]],
    *,
    x_label: str,
    y_label: str,
    marks: list[tuple[float, str]] | None = None,
) -> str:
    """One polyline per series over `x`, with vertical marks (e.g. start-up) labelled."""
    values = [v for s in series.values() for v in s] or [0.0]
    x_hi = max([*x, *(m for m, _ in marks or [])], default=1.0) or 1.0
    x_ticks, y_ticks = nice_ticks(0.0, x_hi), nice_ticks(0.0, max(values) or 1.0)

    def sx(v: float) -> float:
        return LEFT + (v - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (WIDTH - LEFT - RIGHT)

    def sy(v: float) -> float:
        return HEIGHT - BOTTOM - (v - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (HEIGHT - BOTTOM - TOP)

    out = _open(chart_id, title) + _axes(x_ticks, y_ticks, sx, sy, x_label, y_label)
    for i, (name, ys) in enumerate(series.items()):
        points = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, ys, strict=False))
        color = PALETTE[i % len(PALETTE)]
        out.append(
            f'<polyline class="series" data-series="{escape(name)}" points="{points}" fill="none" '
            f'stroke="{color}" stroke-width="1.8"/>'
        )
    for j, (at, text) in enumerate(marks or []):
        mx = sx(at)
        out.append(
            f'<line class="mark" x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
            'stroke="#6b7280" stroke-dasharray="4 3"/>'
        )
        out.append(f'<text x="{mx + 3:.1f}" y="{TOP + 12 + 12 * j}" class="ml">{escape(text)}</text>')
    out += _legend(list(series)) if len(series) > 1 else []
    return "\n".join([*out, "</svg>"])


def histogram(
    chart_id: str,
    title: str,
    edges: list[float],
    counts: dict[str, list[int]],
    *,
    x_label: str,
    y_label: str = "pairs",
    marks: list[tuple[float, str]] | None = None,
) -> str:
    """Bars over bins `edges` for each series (overlaid, half transparent), with vertical marks."""
    top = max([c for cs in counts.values() for c in cs] or [1]) or 1
    x_ticks, y_ticks = nice_ticks(edges[0], edges[-1]), nice_ticks(0.0, top)
    lo, hi = min(x_ticks[0], edges[0]), max(x_ticks[-1], edges[-1])

    def sx(v: float) -> float:
        return LEFT + (v - lo) / (hi - lo) * (WIDTH - LEFT - RIGHT)

    def sy(v: float) -> float:
        return HEIGHT - BOTTOM - v / y_ticks[-1] * (HEIGHT - BOTTOM - TOP)

    out = _open(chart_id, title) + _axes(x_ticks, y_ticks, sx, sy, x_label, y_label)
    for i, (name, cs) in enumerate(counts.items()):
        color = PALETTE[i % len(PALETTE)]
        for left, right, c in zip(edges, edges[1:], cs, strict=False):
            if c:
                x0, x1, y = sx(left), sx(right), sy(c)
                out.append(
                    f'<rect class="bar" data-series="{escape(name)}" x="{x0:.1f}" y="{y:.1f}" '
                    f'width="{max(0.8, x1 - x0 - 0.6):.1f}" height="{HEIGHT - BOTTOM - y:.1f}" '
                    f'fill="{color}" fill-opacity="0.55">'
                    f"<title>{label(left)}–{label(right)}: {c}</title></rect>"
                )
    for j, (at, text) in enumerate(marks or []):
        mx = sx(at)
        out.append(
            f'<line class="mark" x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" '
            'stroke="#111827" stroke-dasharray="4 3"/>'
        )
        out.append(
            f'<text x="{mx - 3:.1f}" y="{TOP + 12 + 12 * j}" text-anchor="end" class="ml">'
            f"{escape(text)}</text>"
        )
    out += _legend(list(counts)) if len(counts) > 1 else []
    return "\n".join([*out, "</svg>"])


def bars(chart_id: str, title: str, items: list[tuple[str, float]], unit: str) -> str:
    """Horizontal bars, one per (label, value), longest scale = the largest value."""
    row = 22
    height = TOP + row * max(1, len(items)) + 12
    top = max([v for _, v in items] or [1.0]) or 1.0
    name_w = 220
    out = _open(chart_id, title, height)
    for i, (name, value) in enumerate(items):
        y = TOP + i * row
        w = value / top * (WIDTH - name_w - 140)
        out.append(f'<text x="{name_w - 8}" y="{y + 15}" text-anchor="end">{escape(name[:34])}</text>')
        out.append(
            f'<rect class="bar" x="{name_w}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{row - 6}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{name_w + w + 6:.1f}" y="{y + 15}">{label(value)} {escape(unit)}</text>')
    return "\n".join([*out, "</svg>"])


def stacked_bar(chart_id: str, title: str, segments: list[tuple[str, float]], unit: str = "s") -> str:
    """One bar split into consecutive segments (label, amount), e.g. the phases of the wall time."""
    height = 96
    total = sum(v for _, v in segments) or 1.0
    out = _open(chart_id, title, height)
    x, span = float(LEFT), WIDTH - LEFT - RIGHT
    for i, (name, value) in enumerate(segments):
        w = value / total * span
        color = PALETTE[i % len(PALETTE)]
        out.append(
            f'<rect class="bar" data-series="{escape(name)}" x="{x:.1f}" y="{TOP}" width="{max(w, 0.5):.1f}" '
            f'height="28" fill="{color}"><title>{escape(name)}: {value:.2f} {unit}</title></rect>'
        )
        x += w
    legend_x = LEFT
    for i, (name, value) in enumerate(segments):
        text = f"{name} {value:.1f} {unit} ({value / total:.0%})"
        out.append(
            f'<rect x="{legend_x}" y="{TOP + 40}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
        )
        out.append(f'<text x="{legend_x + 13}" y="{TOP + 49}">{escape(text)}</text>')
        legend_x += 24 + 7 * len(text)
    return "\n".join([*out, "</svg>"])
