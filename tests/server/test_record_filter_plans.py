"""The records API's filters are index walks on SQLite and PostgreSQL (issue 18).

A county holds 600,000 records: ``GET /api/v1/records?indicator=housing&failing=true`` (and
every other filter) must read a page from an index in its order, and count from indexes, not
sort every matching row. The queries the service really sends are captured and EXPLAINed: on
SQLite (whose plan does not depend on the table's size without ANALYZE) no table scan and no
temporary B-tree for the ORDER BY; on PostgreSQL, with sequential scans and sorts priced out
(``enable_seqscan/enable_sort = off``, which only discourages them), no Seq Scan and no full
Sort (an Incremental Sort within one household's records is fine) — so an index that gives
the order exists.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask

from forms.instruments.samples import problem_household, sample_household
from server.services import records
from server.services.access import Principal
from server.services.household_load import load_households
from server.storage.database import db
from tests.server.sync_device import county

__all__ = ["county"]  # the fixture (built-in forms published), imported for pytest

ADMIN = Principal(1, "admin", "county_admin", "")
VILLAGES = ("530102001201", "530102001202", "530102002201")
FILTERS: list[dict[str, Any]] = [
    {"indicator": "housing", "failing": True},
    {"indicator": "housing", "failing": True, "offset": 2},
    {"indicator": "water", "failing": False, "village": "530102001"},
    {"indicator": "education", "failing": True, "form_id": "compulsory_education"},
    {"indicator": "insurance"},
    {"indicator": "housing", "failing": True, "round": "2026-annual"},
    {},
    {"village": "530102001202"},
    {"form_id": "housing_safety"},
    {"form_id": "housing_safety", "village": "530102002"},
    {"round": "2026-annual", "include_deleted": True},
]


def _load(app: Flask) -> None:
    import json

    lines = []
    for v, village in enumerate(VILLAGES):
        for h in range(4):
            seed = v * 4 + h
            # Every second household has a dangerous house, the fourth a dropout too.
            case = ("dangerous_house", "dropout")[h // 2]
            data = (
                problem_household(case, seed, village_code=village)
                if h % 2
                else sample_household(seed, village_code=village)
            )
            household = {
                "village_code": village,
                "household_no": f"{village}{h + 1:04d}",
                "round": "2026-annual",
                "records": data,
            }
            lines.append(json.dumps(household, ensure_ascii=False))
    with app.app_context():
        report = load_households(lines)
    assert report.households == 12


def _statements(app: Flask, query: dict[str, Any]) -> tuple[dict[str, Any], list[tuple]]:
    sent: list[tuple] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM records" in statement:
            sent.append((statement, params))

    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", grab)
        try:
            answer = records.list_records(ADMIN, **query)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", grab)
    return answer, sent


def _plan(app: Flask, statement: str, params: Any) -> list[str]:
    with app.app_context(), db.engine.connect() as connection:
        raw = connection.connection.driver_connection
        cursor = raw.cursor()
        if db.engine.dialect.name == "postgresql":
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")
            cursor.execute("EXPLAIN (COSTS OFF) " + statement, params)
            lines = [row[0] for row in cursor.fetchall()]
            cursor.execute("RESET ALL")
            return lines
        cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
        return [row[-1] for row in cursor.fetchall()]


def test_every_record_filter_reads_an_index_in_page_order(county: Flask) -> None:
    _load(county)  # once: the filters are asked in turn of the same county
    postgres = county.config["DATABASE_URL"].startswith("postgresql")
    for query in FILTERS:
        answer, sent = _statements(county, query)
        # The filters select something here: a plan of an empty answer would prove little.
        assert answer["total"] > 0 and answer["items"], query
        assert len(sent) == 2, sent  # the count and the page, nothing per record
        for statement, params in sent:
            _assert_index_walk(_plan(county, statement, params), postgres)


def _assert_index_walk(lines: list[str], postgres: bool) -> None:
    plan = "\n".join(lines)
    if postgres:
        assert "Seq Scan on records" not in plan, plan
        # An Incremental Sort over the index's presorted (village, household) orders only the
        # few records of one household at a time; a full Sort would take every match.
        nodes = [line.strip().removeprefix("->").strip() for line in lines]
        assert "Sort" not in nodes, plan
    else:
        assert "SCAN records\n" not in plan + "\n" and "SCAN household_indicators" not in plan
        assert "USING" in plan and "TEMP B-TREE" not in plan, plan


def test_a_filtered_page_is_in_household_order_and_counts_every_match(county: Flask) -> None:
    _load(county)
    everything, _ = _statements(county, {"indicator": "housing", "failing": True, "limit": 1000})
    pages = [
        _statements(county, {"indicator": "housing", "failing": True, "limit": 5, "offset": n})[0]
        for n in range(0, everything["total"] + 5, 5)
    ]
    paged = [item for page in pages for item in page["items"]]
    assert all(page["total"] == everything["total"] for page in pages)
    keys = [
        (r["village_code"], r["household_no"], r["form_id"], r["record_id"])
        for r in everything["items"]
    ]
    assert keys == sorted(keys) and len(keys) == everything["total"]
    assert [r["record_id"] for r in paged] == [k[3] for k in keys]
    # Only the dangerous houses (second household of each village) fail housing: all their
    # records (six instruments), and nothing else.
    assert {r["household_no"][-1] for r in everything["items"]} == {"2"}
    assert everything["total"] == 6 * len(VILLAGES)


def test_an_export_page_is_an_index_walk_and_the_pages_hold_every_record(county: Flask) -> None:
    from server.storage.exports import form_records

    _load(county)
    postgres = county.config["DATABASE_URL"].startswith("postgresql")
    sent: list[tuple] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM records" in statement:
            sent.append((statement, params))

    with county.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", grab)
        try:
            exported = list(form_records("housing_safety", "530102", chunk_rows=5))
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", grab)
    # Pages of 5 (keyset): 12 households' houses in 3 pages, in household order.
    assert len(sent) == 3
    keys = [(r.village_code, r.household_no) for r in exported]
    assert keys == sorted(keys) and len(keys) == 12
    for statement, params in sent:
        _assert_index_walk(_plan(county, statement, params), postgres)


def test_a_download_page_walks_the_scope_in_revision_order(county: Flask) -> None:
    from server.storage.records import changes_since

    _load(county)
    postgres = county.config["DATABASE_URL"].startswith("postgresql")
    for scope, households in ((VILLAGES[1], 4), ("530102001", 8)):
        sent: list[tuple] = []

        def grab(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if "FROM records" in statement:
                sent.append((statement, params))  # noqa: B023 - used inside this turn only

        with county.app_context():
            sa.event.listen(db.engine, "before_cursor_execute", grab)
            try:
                page = changes_since(scope, 0, limit=1000)
            finally:
                sa.event.remove(db.engine, "before_cursor_execute", grab)
        assert len(page.records) == 6 * households and not page.more
        assert all(r.village_code.startswith(scope) for r in page.records)
        revisions = [r.revision for r in page.records]
        assert revisions == sorted(revisions)
        (statement, params), *_ = sent
        plan = _plan(county, statement, params)
        _assert_index_walk(plan, postgres)
        if not postgres and len(scope) == 12:
            # A village walks its own revisions, not the county's.
            assert any("ix_records_village_revision" in line for line in plan), plan
