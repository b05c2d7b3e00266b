"""What a record is checked against, shared by the write path (``record_ops``) and the admin
read side (``records.show``): the server clock, the survey date in Beijing time, the county's
monitoring configuration, and the definitions of usable form versions.

Kept apart from ``record_ops`` so a read view can validate a stored record without reaching
into the write path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from forms import EvaluationContext, FormDefinition
from forms.indicators import MonitoringConfig, MonitoringConfigError
from server.services.indicators import CHINA_TIME
from server.services.monitoring import config_of
from server.storage import forms as form_store
from server.storage import monitoring as monitoring_store
from server.storage.monitoring import MonitoringLine
from sync_protocol.clock import DEFAULT_MAX_DRIFT_MS, wall_clock_ms


@dataclass(frozen=True)
class IngestContext:
    """What every op of one exchange (or admin action) is checked against.

    ``now_ms`` is the server time the suspect-stamp rule compares with; ``today`` the survey date
    (Beijing time) for ``today()`` in form expressions; ``monitoring`` the county's configured
    monitoring lines and water region types, built from ``lines`` (read once per exchange: the
    indicator refresh and the manifest page use these, not another read).
    """

    now_ms: int
    today: date
    monitoring: MonitoringConfig
    max_drift_ms: int = DEFAULT_MAX_DRIFT_MS
    lines: tuple[MonitoringLine, ...] = ()

    def evaluation(self, village_code: str) -> EvaluationContext:
        """The evaluation context for a record of ``village_code``."""
        config: dict[str, Any] = {
            "water_region_type": self.monitoring.water_region_type(village_code)
        }
        line = self.monitoring.monitoring_line(village_code, self.today.year)
        if line is not None:
            config["monitoring_line"] = line
        return EvaluationContext(today=self.today, config=config)


def ingest_context(now_ms: int | None = None) -> IngestContext:
    """Build the context from the server clock and the county's monitoring configuration.

    A stored configuration the form engine refuses cannot be applied to anything; records are
    then checked without a monitoring line rather than not at all.
    """
    now_ms = wall_clock_ms() if now_ms is None else now_ms
    lines = monitoring_store.list_lines()
    try:
        monitoring = config_of(lines)
    except MonitoringConfigError:
        monitoring = MonitoringConfig()
    today = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(CHINA_TIME).date()
    return IngestContext(now_ms=now_ms, today=today, monitoring=monitoring, lines=lines)


def definition(form_id: str, version: int) -> FormDefinition | None:
    """The definition of a published (or retired) form version, or None.

    Drafts and scheduled versions are never returned (records cannot be made on them yet);
    storage keeps loaded definitions, since published versions never change.
    """
    return form_store.usable_definition(form_id, version)
