"""The bulk path into the county database: households from a file, through the ingest rules.

A county's first day (a roster from the national platform, last year's survey) and the county
bench load tens of thousands of households; through ``/sync`` that takes an hour. This path
skips only the transport (envelope, crypto, HTTP): each household's instrument records become
``put`` ops applied by :func:`server.services.record_ops.apply_ops` — the same validation,
merge state, change log, quarantine of refused records and maintained indicator rows as a
tablet's batch — a chunk of ops per write transaction.

The file is JSON Lines, one household per line::

    {"village_code": "530102001201", "household_no": "H0001", "round": "2026-annual",
     "records": {"household_roster": {...}, "housing_safety": {...}, ...}}

Record ids are derived from (village, household, form, round), so loading a file twice merges
the same records again instead of duplicating them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from forms import flatten
from server.errors import ValidationFailed
from server.services.checking import definition, ingest_context
from server.services.record_ops import SERVER_OP_SCOPE, apply_ops, server_stamp
from server.storage import forms as form_store
from server.storage import records
from server.storage.database import writing
from sync_protocol.ops import Op, put_op

#: The device id the loaded ops carry (their change-log entries say where they came from).
LOADER_DEVICE = "bulk-load"
#: Ops per write transaction: big enough to amortise the commit, small enough not to hold the
#: SQLite write lock for long while tablets sync.
OPS_PER_TRANSACTION = 600
_RECORD_NAMESPACE = uuid.UUID("6f1c2a52-8a0e-4c7e-9a55-0c5b1d7e3f10")


@dataclass
class LoadReport:
    """What a load did: households and records read, and the ops' outcomes by status."""

    households: int = 0
    records: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    #: (line number, message) of lines that could not be read; nothing of them was loaded.
    bad_lines: list[tuple[int, str]] = field(default_factory=list)


def record_id_for(village_code: str, household_no: str, form_id: str, round: str) -> str:
    """The stable record id of a household's ``form_id`` record in ``round``."""
    return str(uuid.uuid5(_RECORD_NAMESPACE, f"{village_code}/{household_no}/{form_id}/{round}"))


def _published_versions() -> dict[str, int]:
    """Form id → its newest published version."""
    out: dict[str, int] = {}
    for row in form_store.published_versions():
        out[row.form_id] = max(out.get(row.form_id, 0), row.version)
    return out


@dataclass(frozen=True)
class _Put:
    record_id: str
    form_id: str
    version: int
    changes: dict[str, Any]
    household: dict[str, str]
    round: str

    def op(self, seq: int) -> Op:
        return put_op(
            device_id=LOADER_DEVICE,
            seq=seq,
            record_id=self.record_id,
            form_id=self.form_id,
            form_version=self.version,
            changes=self.changes,
            hlc=server_stamp(),
            household=self.household,
            round=self.round,
        )


def _puts_of(line: str, versions: dict[str, int]) -> list[_Put]:
    try:
        household = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(household, dict) or not isinstance(household.get("records"), dict):
        raise ValueError("a line is an object with village_code, household_no, round, records")
    village, number = household.get("village_code"), household.get("household_no")
    round_ = household.get("round")
    if not all(isinstance(v, str) and v for v in (village, number, round_)):
        raise ValueError("village_code, household_no and round must be non-empty text")
    ops = []
    for form_id, data in household["records"].items():
        version = versions.get(form_id)
        if version is None or definition(form_id, version) is None:
            raise ValueError(f"form {form_id!r} has no published version")
        if not isinstance(data, dict):
            raise ValueError(f"the {form_id} record is not an object")
        ops.append(
            _Put(
                record_id=record_id_for(village, number, form_id, round_),
                form_id=form_id,
                version=version,
                changes=flatten(data),
                household={"village_code": village, "household_no": number},
                round=round_,
            )
        )
    return ops


def _chunks(lines: Iterable[str], report: LoadReport) -> Iterator[list[_Put]]:
    versions = _published_versions()
    if not versions:
        raise ValidationFailed(
            en="no form is published yet; start the server once (it publishes the built-ins)",
            zh="尚无已发布的表单：请先启动一次服务器（会发布内置表单）",
            code="no_published_forms",
        )
    pending: list[_Put] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            ops = _puts_of(line, versions)
        except ValueError as exc:
            report.bad_lines.append((number, str(exc)))
            continue
        report.households += 1
        report.records += len(ops)
        pending.extend(ops)
        if len(pending) >= OPS_PER_TRANSACTION:
            yield pending
            pending = []
    if pending:
        yield pending


def load_households(
    lines: Iterable[str],
    *,
    by: str = "cli:load-households",
    progress: Callable[[LoadReport], None] | None = None,
) -> LoadReport:
    """Load the households of ``lines`` (JSON Lines, see the module) through the ingest rules.

    Each chunk of ops commits in its own write transaction (records, change log, quarantine of
    refused records, indicator rows together). A line that cannot be read is reported in
    ``bad_lines`` and skipped. Raises :class:`ValidationFailed` (``no_published_forms``) when no
    form is published.
    """
    report = LoadReport()
    for puts in _chunks(lines, report):
        ctx = ingest_context()
        with writing():
            # Server-made ops are numbered from the server's own op counter, one block a chunk.
            first = records.reserve_revisions(SERVER_OP_SCOPE, len(puts))
            ops = [put.op(first + index) for index, put in enumerate(puts)]
            outcomes = apply_ops(ops, ctx, scope=None, by=by)
        for outcome in outcomes:
            report.statuses[outcome.status] = report.statuses.get(outcome.status, 0) + 1
        if progress is not None:
            progress(report)
    return report
