"""Bar and trend charts as server-rendered SVG: no JavaScript, no chart library, nothing fetched.

A county page needs bars by village and a trend by round, nothing else a library would add;
inline SVG scales with the phone's width, prints, and renders Chinese labels in the page's own
font.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

ROW_HEIGHT = 22
LABEL_WIDTH = 120
BAR_WIDTH = 200
VALUE_WIDTH = 90


@dataclass(frozen=True)
class Bar:
    """One bar: its label, ``count`` out of ``total``, and the page listing what it counts."""

    label: str
    count: int
    total: int
    href: str = ""

    @property
    def share(self) -> float:
        """``count / total`` (0 without a total)."""
        return self.count / self.total if self.total else 0.0


def bar_chart(title: str, bars: Sequence[Bar]) -> Markup:
    """A horizontal bar chart of shares; each bar links to ``href`` when given."""
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    height = ROW_HEIGHT * max(len(bars), 1) + 4
    parts = [
        f'<svg class="bars" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    if not bars:
        parts.append(f'<text x="0" y="16">{escape("暂无数据")}</text>')
    for index, bar in enumerate(bars):
        y = index * ROW_HEIGHT + 2
        length = round(BAR_WIDTH * bar.share, 1)
        colour = "#c0392b" if bar.share >= 0.2 else "#e08e0b" if bar.share > 0 else "#2e8b57"
        row = (
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end">{escape(bar.label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{BAR_WIDTH}" height="{ROW_HEIGHT - 6}" '
            f'fill="#edf1f5"/>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length}" height="{ROW_HEIGHT - 6}" '
            f'fill="{colour}"/>'
            f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 15}">'
            f"{bar.count}/{bar.total}（{bar.share:.0%}）</text>"
        )
        if bar.href:
            row = f'<a href="{escape(bar.href)}">{row}</a>'
        parts.append(row)
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Point:
    """One point of a trend line: ``count`` out of ``total`` in one round, linking to ``href``."""

    count: int
    total: int
    href: str = ""

    @property
    def share(self) -> float:
        """``count / total`` (0 without a total)."""
        return self.count / self.total if self.total else 0.0


@dataclass(frozen=True)
class Line:
    """A named series of points, one per round of the chart."""

    label: str
    colour: str
    points: tuple[Point, ...]


TREND_WIDTH = 360
TREND_HEIGHT = 160
TREND_LEFT = 40
TREND_BOTTOM = 36
TREND_LEGEND = 18


def trend_chart(title: str, rounds: Sequence[str], lines: Sequence[Line]) -> Markup:
    """Shares by round as lines (one per series), each point a link to what it counts.

    The y axis is the share (0 %–the largest share shown, at least 10 %); the x axis one tick per
    round in the order given. With a single round the points stand alone.
    """
    legend_height = TREND_LEGEND * len(lines)
    height = TREND_HEIGHT + legend_height
    plot_w = TREND_WIDTH - TREND_LEFT - 10
    plot_h = TREND_HEIGHT - TREND_BOTTOM - 10
    top = max([0.1, *(p.share for line in lines for p in line.points)])
    parts = [
        f'<svg class="trend" viewBox="0 0 {TREND_WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    if not rounds:
        parts.append(f'<text x="0" y="16">{escape("暂无数据")}</text></svg>')
        return Markup("".join(parts))

    def x(index: int) -> float:
        if len(rounds) == 1:
            return TREND_LEFT + plot_w / 2
        return round(TREND_LEFT + plot_w * index / (len(rounds) - 1), 1)

    def y(share: float) -> float:
        return round(10 + plot_h * (1 - share / top), 1)

    base = y(0)
    parts.append(
        f'<line x1="{TREND_LEFT}" y1="{base}" x2="{TREND_LEFT + plot_w}" y2="{base}" '
        f'stroke="#999"/><text x="{TREND_LEFT - 4}" y="{y(top) + 4}" text-anchor="end" '
        f'font-size="10">{top:.0%}</text><text x="{TREND_LEFT - 4}" y="{base + 4}" '
        f'text-anchor="end" font-size="10">0%</text>'
    )
    for index, name in enumerate(rounds):
        # The first and last labels lean inwards so neither is cut at the chart's edge.
        anchor = "middle"
        if len(rounds) > 1 and index == 0:
            anchor = "start"
        elif len(rounds) > 1 and index == len(rounds) - 1:
            anchor = "end"
        parts.append(
            f'<text x="{x(index)}" y="{base + 16}" text-anchor="{anchor}" font-size="10">'
            f"{escape(name)}</text>"
        )
    for number, line in enumerate(lines):
        coords = " ".join(f"{x(i)},{y(p.share)}" for i, p in enumerate(line.points))
        if len(line.points) > 1:
            parts.append(
                f'<polyline points="{coords}" fill="none" stroke="{line.colour}" stroke-width="2"/>'
            )
        for index, point in enumerate(line.points):
            dot = (
                f'<circle cx="{x(index)}" cy="{y(point.share)}" r="4" fill="{line.colour}">'
                f"<title>{escape(line.label)} {escape(rounds[index])}："
                f"{point.count}/{point.total}（{point.share:.0%}）</title></circle>"
            )
            if point.href:
                dot = f'<a href="{escape(point.href)}">{dot}</a>'
            parts.append(dot)
        legend_y = TREND_HEIGHT + number * TREND_LEGEND
        parts.append(
            f'<rect x="{TREND_LEFT}" y="{legend_y}" width="12" height="12" '
            f'fill="{line.colour}"/><text x="{TREND_LEFT + 18}" y="{legend_y + 11}" '
            f'font-size="12">{escape(line.label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
