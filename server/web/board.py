"""The 动态清零 board page, beside the dashboard: what is open, for how long, and what cleared it."""

from __future__ import annotations

from typing import Any

from flask import render_template, request, url_for

from server.services import board, indicators
from server.services.access import Principal
from server.web.base import blueprint, signed_in
from server.web.charts import Bar, bar_chart
from server.web.dashboard import PROBLEM_NAMES

#: Problem types as the board names them (what is wrong, in the words of 两不愁三保障).
BOARD_NAMES = {
    "housing": "住房不安全",
    "water": "饮水不安全",
    "education": "失学辍学",
    "insurance": "未参加基本医保",
    "income": "收入低于监测线",
}
STATUS_NAMES = {board.OPEN: "未清零", board.CLEARING: "待下轮确认", board.CLEARED: "已清零"}
#: Rows of the lists on the page (the API gives more with ``limit``).
LISTED = 50


@blueprint.get("/board")
@signed_in()
def board_page(principal: Principal) -> Any:
    """Open problems by type with their age per township or village, oldest first; every
    number links to the households behind it."""
    area = indicators.effective_area(principal, request.args.get("area"))
    level = request.args.get("level") or ("township" if len(area) < 9 else "village")
    data = board.board(principal, area=area, level=level, limit=LISTED)
    unit = "乡镇" if data["level"] == "township" else "村"
    charts = []
    for name, title in BOARD_NAMES.items():
        if not any(row["open"][name] for row in data["areas"]):
            continue
        bars = [
            Bar(
                row["area"],
                row["open"][name],
                row["households"],
                url_for("web.households", area=row["area"], problem=name),
            )
            for row in sorted(data["areas"], key=lambda r: -r["open"][name])
        ]
        charts.append((f"{title}（未清零户 / 农户，按{unit}）", bar_chart(title, bars)))
    return render_template(
        "board.html",
        data=data,
        area=area,
        level=data["level"],
        unit=unit,
        charts=charts,
        names=BOARD_NAMES,
        short_names=PROBLEM_NAMES,
        status_names=STATUS_NAMES,
        own_area=principal.area_prefix,
    )
