"""Home: the 两不愁三保障 + 饮水安全 dashboard of the signed-in admin's area."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from flask import Response, render_template, request, url_for

from server.services import auth, indicators
from server.services.access import Principal
from server.web.base import blueprint, signed_in
from server.web.charts import Bar, Line, Point, bar_chart, trend_chart

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
#: Line colours of the trend chart, one per indicator (distinct in print and for most colour
#: blindness).
TREND_COLOURS = {
    "housing": "#c0392b",
    "water": "#1f77b4",
    "education": "#e08e0b",
    "insurance": "#6a3d9a",
    "income": "#2e8b57",
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
        trend=_trend(principal, area),
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


def _trend(principal: Principal, area: str) -> Any:
    """The share failing each indicator, round by round; every point links to its households."""
    rounds = indicators.trend(principal, area=area)
    names = [r["round"] for r in rounds]
    lines = [
        Line(
            PROBLEM_NAMES[name],
            TREND_COLOURS[name],
            tuple(
                Point(
                    r["failing"][name],
                    r["decided"][name],
                    url_for("web.households", area=area, problem=name, round=r["round"]),
                )
                for r in rounds
            ),
        )
        for name in INDICATOR_NAMES
    ]
    return trend_chart("各轮次未达标户占比（按调查轮次）", names, lines)


#: Columns of the dashboard table download: header and how a row's value is read.
TABLE_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("地区", lambda row: row["area"]),
    ("农户", lambda row: row["households"]),
    *(
        (title, lambda row, name=name: row["indicators"][name]["failing"])
        for name, title in INDICATOR_NAMES.items()
    ),
    *(
        (
            f"饮水不达标：{title}",
            lambda row, name=name: row["indicators"]["water"]["failed_by_indicator"].get(name, 0),
        )
        for name, title in WATER_NAMES.items()
    ),
    ("监测对象", lambda row: row["monitoring_objects"]),
    ("风险已消除", lambda row: row["risk_removed"]),
    ("本轮新增风险", lambda row: row["newly_at_risk"]),
    ("未清零问题", lambda row: row["open_problems"]),
    ("最久未清零天数", lambda row: row["oldest_open_problem_days"]),
    ("待处理冲突", lambda row: row["open_conflicts"]),
    ("最久冲突天数", lambda row: row["oldest_conflict_days"]),
)


@blueprint.get("/dashboard.csv")
@signed_in()
def dashboard_csv(principal: Principal) -> Any:
    """The dashboard table (counts only, no personal data) as CSV for Excel (UTF-8 with BOM)."""
    area = indicators.effective_area(principal, request.args.get("area"))
    round_ = request.args.get("round") or None
    data = indicators.rollup(principal, area=area, level=_level_below(area), round=round_, limit=0)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([header for header, _ in TABLE_COLUMNS])
    for row in [*data["areas"], {**data["total"], "area": "合计"}]:
        writer.writerow(["" if (v := read(row)) is None else v for _, read in TABLE_COLUMNS])
    response = Response("\ufeff" + out.getvalue(), content_type="text/csv; charset=utf-8")
    name = f"dashboard-{area or 'all'}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
