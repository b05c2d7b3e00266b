"""Bar charts as server-rendered SVG: no JavaScript, no chart library, nothing fetched.

A county page needs bars by village and nothing else a library would add, and inline SVG
scales with the phone's width, prints, and renders Chinese labels in the page's own font.
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
