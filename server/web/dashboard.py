"""Home: the 两不愁三保障 + 饮水安全 dashboard of the signed-in admin's area."""

from __future__ import annotations

from typing import Any

from flask import render_template, request, url_for

from server.services import auth, indicators
from server.services.access import Principal
from server.web.base import blueprint, signed_in
from server.web.charts import Bar, bar_chart

#: The indicators shown, in the order of 两不愁三保障 + 饮水安全, with their Chinese names.
INDICATOR_NAMES = {
    "housing": "住房不安全",
    "water": "饮水不安全",
    "education": "义务教育阶段失学辍学",
    "insurance": "未全员参加基本医保",
    "income": "人均纯收入低于监测线",
}
WATER_NAMES = {
    "quantity": "水量",
    "quality": "水质",
    "convenience": "取水便利",
    "reliability": "供水保证率",
}
PROBLEM_NAMES = {
    "housing": "住房",
    "water": "饮水",
    "education": "教育",
    "insurance": "医保",
    "income": "收入",
}


def _level_below(area: str) -> str:
    """A county (or the whole database) is shown by township, a township by village."""
    return "township" if len(area) < 9 else "village"


@blueprint.get("/")
@signed_in()
def dashboard(principal: Principal) -> Any:
    """Counts and shares by township or village; every number links to what it counts."""
    area = indicators.effective_area(principal, request.args.get("area"))
    level = _level_below(area)
    round_ = request.args.get("round") or None
    data = indicators.rollup(principal, area=area, level=level, round=round_, limit=50)
    charts = []
    for name, title in INDICATOR_NAMES.items():
        bars = []
        for row in data["areas"]:
            ind = row["indicators"][name]
            decided = ind["passing"] + ind["failing"]
            href = url_for("web.households", area=row["area"], problem=name, round=round_)
            bars.append(Bar(row["area"], ind["failing"], decided, href))
        charts.append(
            (title, bar_chart(f"{title}（按{'乡镇' if level == 'township' else '村'}）", bars))
        )
    return render_template(
        "dashboard.html",
        data=data,
        area=area,
        level=level,
        round=round_,
        charts=charts,
        names=INDICATOR_NAMES,
        water_names=WATER_NAMES,
        problem_names=PROBLEM_NAMES,
        change_password=auth.needs_password_change(principal),
        own_area=principal.area_prefix,
    )
