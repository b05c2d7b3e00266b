"""Survey records for server tests, stored the way a synced device's ops leave them.

Each instrument record of a sample household is turned into one ``put`` op, merged by the real
``sync_protocol.merge`` and saved through the storage functions the sync endpoint's batch calls
(``reserve_revisions``, ``add_households``, ``write_records``), so the stored state and data have
exactly the shape the sync endpoint writes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask

from forms import flatten, unflatten
from forms.instruments import load_builtin
from server.services import indicators
from server.storage import records
from server.storage.database import db, writing
from server.storage.models import Record
from sync_protocol.merge import current_values, merge
from sync_protocol.ops import put_op

_MS = 1_764_000_000_000  # 2025-11-24, a fixed device clock


def store_household(
    app: Flask,
    household: dict[str, dict[str, Any]],
    *,
    village_code: str,
    household_no: str,
    round: str = "2026-annual",
    forms: tuple[str, ...] | None = None,
    at: datetime | None = None,
) -> dict[str, str]:
    """Store a household's instrument records (form id → data); returns form id → record id.

    ``at`` sets the records' creation time (when the survey reached the server).
    """
    ids: dict[str, str] = {}
    with app.app_context(), writing():
        for seq, (form_id, data) in enumerate(household.items(), start=1):
            if forms is not None and form_id not in forms:
                continue
            definition = load_builtin(form_id)
            record_id = str(uuid.uuid4())
            op = put_op(
                device_id="dev-test",
                seq=seq,
                record_id=record_id,
                form_id=form_id,
                form_version=definition.version,
                changes=flatten(data),
                hlc=f"{_MS + seq:012x}-0000-dev-test",
                household={"village_code": village_code, "household_no": household_no},
                round=round,
            )
            state = merge(None, op, definition.merge_policy, reference_ms=_MS).state
            county = records.county_of(village_code)
            revision = records.reserve_revisions(county, 2)  # the record's and its household's
            records.add_households(
                [
                    {
                        "village_code": village_code,
                        "household_no": household_no,
                        "county_code": county,
                        "revision": revision + 1,
                        "created_by_device": None,
                    }
                ]
            )
            row = {
                "record_id": record_id,
                "form_id": form_id,
                "form_version": definition.version,
                "village_code": village_code,
                "county_code": county,
                "household_no": household_no,
                "round": round,
                "revision": revision,
                "deleted": False,
                "state": state.to_dict(),
                "data": unflatten(current_values(state)),
            }
            records.write_records([row], [])
            if at is not None:
                db.session.execute(
                    sa.update(Record)
                    .where(Record.record_id == record_id)
                    .values(created_at=at, updated_at=at)
                )
            ids[form_id] = record_id
        # Written past the ingest path, so the dashboard rows are refreshed as ingest does.
        indicators.refresh_households([(village_code, household_no)])
    return ids
