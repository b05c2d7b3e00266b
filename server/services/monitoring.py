"""Monitoring-line configuration (DOMAIN.md: set every year per province, local overrides).

Each row is a region code prefix (province 2 digits … village 12) and a year, with the income
line in yuan per person per year and optional local thresholds. :func:`monitoring_config`
turns the rows into the form engine's ``forms.indicators.MonitoringConfig`` so the server
computes indicators exactly as tablets do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forms.indicators import MonitoringConfig, MonitoringConfigError
from server.errors import NotFound, ValidationFailed, from_library_error
from server.services.access import Actor
from server.storage import monitoring as store
from server.storage.database import writing
from server.storage.monitoring import MonitoringLine

#: Optional per-row settings and the MonitoringConfig table each one feeds.
THRESHOLD_TABLES = {
    "income_drop_percent": "income_drop_percents",
    "expense_rise_percent": "expense_rise_percents",
    # yuan, not a percentage: the 医保 out-of-pocket amount department cross-checks flag above
    "medical_out_of_pocket_yuan": "medical_out_of_pocket_yuan",
}


def _config_from(rows: Sequence[MonitoringLine]) -> MonitoringConfig:
    tables: dict[str, dict[str, dict[int, float]]] = {"monitoring_lines": {}}
    water: dict[str, str] = {}
    for row in rows:
        tables["monitoring_lines"].setdefault(row.region_code, {})[row.year] = row.income_line
        for key, table in THRESHOLD_TABLES.items():
            if row.settings.get(key) is not None:
                tables.setdefault(table, {}).setdefault(row.region_code, {})[row.year] = (
                    row.settings[key]
                )
        if row.settings.get("water_region_type"):
            # Rows come in year order, so the latest year's region type wins.
            water[row.region_code] = row.settings["water_region_type"]
    return MonitoringConfig(**tables, water_region_types=water)


#: The configuration built from the last lines storage handed out (the same tuple while the
#: table is unchanged), so an exchange does not rebuild it for every use.
_LAST: list[tuple[tuple[MonitoringLine, ...], MonitoringConfig]] = []


def monitoring_config() -> MonitoringConfig:
    """The county's monitoring configuration, as the indicator functions take it.

    Raises :class:`MonitoringConfigError` for a stored configuration the form engine refuses.
    """
    return config_of(store.list_lines())


def config_of(lines: tuple[MonitoringLine, ...]) -> MonitoringConfig:
    """The configuration of ``lines`` (as :func:`list_lines` hands them out): the one built
    before while storage hands out the same tuple. Raises as :func:`monitoring_config`."""
    last = _LAST[0] if _LAST else None
    if last is not None and last[0] is lines:
        return last[1]
    config = _config_from(lines)
    _LAST[:] = [(lines, config)]
    return config


def set_line(
    region_code: str, year: int, income_line: float, settings: dict[str, Any], *, actor: Actor
) -> MonitoringLine:
    """Set the line (and optional thresholds) of a region inside the actor's area; audited.

    Raises :class:`ValidationFailed` (``monitoring_config_invalid``) for a bad prefix, year,
    amount or threshold, and :class:`server.errors.Forbidden` outside the actor's area.
    """
    actor.require_area(region_code)
    settings = {k: v for k, v in settings.items() if v is not None}
    with writing():
        rows = [
            r for r in store.list_lines() if not (r.region_code == region_code and r.year == year)
        ]
        candidate = MonitoringLine(
            region_code=region_code, year=year, income_line=income_line, settings=settings
        )
        try:
            _config_from([*rows, candidate])
        except MonitoringConfigError as exc:
            raise from_library_error(
                exc, ValidationFailed, code="monitoring_config_invalid"
            ) from None
        row = store.set_line(
            region_code=region_code,
            year=year,
            income_line=income_line,
            settings=settings,
            updated_by=actor.name,
        )
        actor.audit(
            "monitoring_line.set",
            target_type="monitoring_line",
            target_id=f"{region_code}/{year}",
            area_code=region_code,
            details={"income_line": income_line, **settings},
        )
        return row


def delete_line(region_code: str, year: int, *, actor: Actor) -> None:
    """Remove a region's line for a year; audited. Raises :class:`NotFound` if there is none."""
    actor.require_area(region_code)
    with writing():
        if not store.delete_line(region_code, year):
            raise NotFound(
                en=f"no monitoring line for {region_code} in {year}",
                zh=f"{region_code} 在 {year} 年没有监测标准",
                code="monitoring_line_not_found",
            )
        actor.audit(
            "monitoring_line.delete",
            target_type="monitoring_line",
            target_id=f"{region_code}/{year}",
            area_code=region_code,
        )


def list_lines() -> tuple[MonitoringLine, ...]:
    """Every configured line, by region then year."""
    return store.list_lines()
