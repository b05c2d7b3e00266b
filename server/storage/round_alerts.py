"""Storage of the round-over-round alert runs and their per-household findings (issue 17).

A run and its findings are written once, in one transaction, and never updated: what a past run
found under its configuration stays as it was (``server.services.round_alerts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from server.storage.database import db
from server.storage.models import RoundAlertFinding, RoundAlertRun
from server.storage.scoping import under_prefix
from server.storage.types import plain


@dataclass(frozen=True)
class StoredRun:
    """One stored run (see :class:`server.storage.models.RoundAlertRun`)."""

    id: int
    round: str
    area_prefix: str
    config_key: str
    findings_key: str
    config: dict[str, Any]
    counts: dict[str, Any]
    households: int
    signals: int
    run_by: str
    started_at: datetime


@dataclass(frozen=True)
class StoredFinding:
    """What one run found for one household."""

    run_id: int
    village_code: str
    household_no: str
    previous_round: str | None
    monitored: bool
    income_change_percent: float | None
    expense_rise_percent: float | None
    problems: dict[str, Any]
    reasons: dict[str, Any]


def find_run(round: str, area_prefix: str, findings_key: str) -> StoredRun | None:
    """The stored run of ``round`` over ``area_prefix`` with these exact findings, if any."""
    row = db.session.scalars(
        sa.select(RoundAlertRun).where(
            RoundAlertRun.round == round,
            RoundAlertRun.area_prefix == area_prefix,
            RoundAlertRun.findings_key == findings_key,
        )
    ).first()
    return None if row is None else plain(StoredRun, row)


def add_run(
    *,
    round: str,
    area_prefix: str,
    config_key: str,
    findings_key: str,
    config: dict[str, Any],
    counts: dict[str, Any],
    households: int,
    signals: int,
    run_by: str,
    started_at: datetime,
    findings: list[dict[str, Any]],
) -> StoredRun:
    """Insert a run (``households`` compared) and its findings (column → value each, without
    ``run_id``); call inside a write transaction. Raises ``IntegrityError`` if the same run was stored concurrently."""
    row = RoundAlertRun(
        round=round,
        area_prefix=area_prefix,
        config_key=config_key,
        findings_key=findings_key,
        config=config,
        counts=counts,
        households=households,
        signals=signals,
        run_by=run_by,
        started_at=started_at,
    )
    db.session.add(row)
    db.session.flush()
    if findings:
        db.session.execute(
            sa.insert(RoundAlertFinding), [{**finding, "run_id": row.id} for finding in findings]
        )
    return plain(StoredRun, row)


def runs(area_prefix: str, round: str | None = None, limit: int = 100) -> list[StoredRun]:
    """Runs over areas inside ``area_prefix`` (newest first), of one ``round`` when given."""
    query = sa.select(RoundAlertRun).where(under_prefix(RoundAlertRun.area_prefix, area_prefix))
    if round is not None:
        query = query.where(RoundAlertRun.round == round)
    rows = db.session.scalars(
        query.order_by(RoundAlertRun.started_at.desc(), RoundAlertRun.id.desc()).limit(limit)
    ).all()
    return [plain(StoredRun, row) for row in rows]


def run(run_id: int) -> StoredRun | None:
    """The run ``run_id``, or None."""
    row = db.session.get(RoundAlertRun, run_id)
    return None if row is None else plain(StoredRun, row)


def findings(run_id: int, area_prefix: str = "") -> list[StoredFinding]:
    """The findings of a run under ``area_prefix``, village code then household number order."""
    rows = db.session.scalars(
        sa.select(RoundAlertFinding)
        .where(
            RoundAlertFinding.run_id == run_id,
            under_prefix(RoundAlertFinding.village_code, area_prefix),
        )
        .order_by(RoundAlertFinding.village_code, RoundAlertFinding.household_no)
    ).all()
    return [plain(StoredFinding, row) for row in rows]
