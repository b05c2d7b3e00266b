"""The storage layer's promises, one contract class run on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.storage import conflicts as conflict_store
from server.storage import (
    devices,
    enrollment,
    quarantine,
    records,
    revisions,
    schema,
    sync_state,
    users,
)
from server.storage import forms as form_store
from server.storage import throttle as throttle_store
from server.storage import uploads as upload_store
from server.storage.database import db, writing
from server.storage.errors import ConstraintViolation, Duplicate, StorageBusy
from server.storage.models import Base, DeviceOpMark, Household
from server.storage.types import utcnow

VILLAGE_A = "530102001201"
VILLAGE_B = "530102001202"
OTHER_TOWNSHIP = "530102002201"
OTHER_COUNTY = "530103001201"


def write(record_id: str, village: str, data: dict[str, object], *, deleted: bool = False) -> bool:
    """Write one record the way the ingest path does (``record_ops``' batch, inside the caller's
    write transaction): lock its row, reserve revisions from its county's counter, add its
    household, insert or update it. A new record takes two revisions (its own and its
    household's), as an op does. False for a deletion that names no record."""
    existing = records.lock_states([record_id]).get(record_id)
    if existing is None and deleted:
        return False
    village = existing["village_code"] if existing else village
    county = records.county_of(village)
    first = records.reserve_revisions(county, 1 if existing else 2)
    row = {
        "record_id": record_id,
        "form_id": "housing_safety",
        "form_version": 1,
        "village_code": village,
        "county_code": county,
        "household_no": "H001",
        "round": "2026-annual",
        "revision": first,
        "deleted": deleted,
        "state": {"fields": data},
        "data": dict(data),
    }
    if existing is None:
        household = {"village_code": village, "household_no": "H001", "county_code": county}
        records.add_households([{**household, "revision": first + 1, "created_by_device": None}])
    records.write_records([] if existing else [row], [row] if existing else [])
    return True


def put(
    record_id: str | None = None, village: str = VILLAGE_A, **data: object
) -> records.StoredRecord:
    """Save one record in its own write transaction (the production write path)."""
    record_id = record_id or str(uuid.uuid4())
    with writing():
        write(record_id, village, data)
    stored = records.get_record(record_id)
    assert stored is not None
    return stored


def delete(record_id: str) -> records.StoredRecord | None:
    """Turn a record into a tombstone in its own write transaction; None if there is none."""
    with writing():
        if not write(record_id, VILLAGE_A, {}, deleted=True):
            return None
    return records.get_record(record_id)


def drain(scope: str, since: int = 0, limit: int = 3) -> tuple[list[tuple[str, int]], int]:
    """Page through a scope to the end; returns (record id, revision) in order and the cursor."""
    seen: list[tuple[str, int]] = []
    while True:
        page = records.changes_since(scope, since, limit)
        seen.extend((r.record_id, r.revision) for r in page.records)
        assert page.next_since >= since
        since = page.next_since
        if not page.more:
            return seen, since


class TestStorageContract:
    @pytest.fixture(autouse=True)
    def _context(self, app: Flask):
        with app.app_context():
            yield

    def test_migrations_create_exactly_the_models(self) -> None:
        assert schema.current_revision(db.engine) == schema.head_revision()
        with db.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []

    def test_upgrade_twice_is_a_no_op(self) -> None:
        assert schema.upgrade(db.engine) == schema.head_revision()

    def test_revision_only_goes_up(self) -> None:
        record_id = str(uuid.uuid4())
        seen = [put(record_id, grade=str(i)).revision for i in range(5)]
        other = put(village=VILLAGE_B).revision
        assert seen == sorted(seen) and len(set(seen)) == 5
        assert other > seen[-1]
        tomb = delete(record_id)
        assert tomb is not None and tomb.deleted and tomb.revision > other

    def test_since_cursor_is_exclusive_and_pages_without_gaps(self) -> None:
        written = [put().record_id for _ in range(10)]
        seen, cursor = drain(VILLAGE_A)
        assert [rid for rid, _ in seen] == written
        assert [rev for _, rev in seen] == sorted(rev for _, rev in seen)
        assert records.changes_since(VILLAGE_A, cursor).records == []
        # Updating a record moves it to the end of the feed, once.
        put(written[0], grade="B")
        again, _ = drain(VILLAGE_A, cursor)
        assert [rid for rid, _ in again] == [written[0]]

    def test_tombstones_are_listed(self) -> None:
        keep, gone = put().record_id, put().record_id
        _, cursor = drain(VILLAGE_A)
        delete(gone)
        page = records.changes_since(VILLAGE_A, cursor)
        assert [(r.record_id, r.deleted) for r in page.records] == [(gone, True)]
        assert records.get_record(keep).deleted is False
        assert delete(str(uuid.uuid4())) is None

    def test_scope_filters_by_village_code_prefix(self) -> None:
        a, b = put(village=VILLAGE_A).record_id, put(village=VILLAGE_B).record_id
        c = put(village=OTHER_TOWNSHIP).record_id
        d = put(village=OTHER_COUNTY).record_id
        assert [rid for rid, _ in drain(VILLAGE_A)[0]] == [a]
        assert [rid for rid, _ in drain("530102001")[0]] == [a, b]
        assert [rid for rid, _ in drain("530102")[0]] == [a, b, c]
        assert [rid for rid, _ in drain("530103")[0]] == [d]
        with pytest.raises(records.ScopeError):
            records.changes_since("5301", 0)

    def test_counters_are_per_county(self) -> None:
        put(village=VILLAGE_A)
        put(village=VILLAGE_A)
        first_other = put(village=OTHER_COUNTY).revision
        assert first_other == 1
        assert revisions.current_revision("530102") == 4  # two records, two households

    def test_concurrent_writers_never_let_a_cursor_skip(self, app: Flask) -> None:
        per_writer = 25
        written: list[str] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                with app.app_context():
                    for _ in range(per_writer):
                        record_id = str(uuid.uuid4())
                        with writing():
                            write(record_id, VILLAGE_A, {})
                            # Hold the revision a moment before committing, so that the other
                            # writer's transaction overlaps this one.
                            time.sleep(0.001)
                        with lock:
                            written.append(record_id)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=writer) for _ in range(2)]
        for thread in threads:
            thread.start()
        seen: list[str] = []
        cursor = 0
        while any(t.is_alive() for t in threads):
            page = records.changes_since(VILLAGE_A, cursor, 4)
            seen.extend(r.record_id for r in page.records)
            cursor = page.next_since
            db.session.rollback()  # a fresh snapshot for the next page
        for thread in threads:
            thread.join()
        assert errors == []
        rest, _ = drain(VILLAGE_A, cursor)
        seen.extend(rid for rid, _ in rest)
        assert len(seen) == len(set(seen)) == 2 * per_writer
        assert set(seen) == set(written)

    def test_reserved_revisions_are_consecutive_and_never_reused(self) -> None:
        with writing():
            first = revisions.reserve_revisions("530102", 5)
            single = revisions.next_revision("530102")
            second = revisions.reserve_revisions("530102", 3)
        assert list(first) == [1, 2, 3, 4, 5] and single == 6 and list(second) == [7, 8, 9]
        assert put(village=VILLAGE_A).revision == 10  # the next after the reserved ones
        with pytest.raises(ValueError), writing():
            revisions.reserve_revisions("530102", 0)

    def test_history_is_kept_in_order(self) -> None:
        record = put(grade="A")
        with writing():
            records.add_change(
                record_id=record.record_id, revision=record.revision, kind="put", changes={"a": 1}
            )
            records.add_change(
                record_id=record.record_id, revision=record.revision + 1, kind="put", changes={}
            )
        assert [c.revision for c in records.history(record.record_id)] == [
            record.revision,
            record.revision + 1,
        ]

    def test_the_admin_read_model_is_plain_data_of_the_area(self) -> None:
        record = put(grade="A")
        with writing():
            for revision in (record.revision + 1, record.revision):
                records.add_change(
                    record_id=record.record_id, revision=revision, kind="put", changes={"g": 1}
                )
            for conflict_id in ("c-2", "c-1", "c-3"):
                conflict_store.open_conflict(
                    conflict_id=conflict_id,
                    record_id=record.record_id,
                    village_code=VILLAGE_A,
                    kind="review_field",
                    path="grade",
                    base=None,
                    mine={"value": "B"},
                    theirs={"value": "C"},
                    device_id=None,
                )
            conflict_store.close_conflicts(["c-3"], status=conflict_store.RESOLVED, by="t")
        detail = records.record_detail(record.record_id, "530102001")
        db.session.remove()  # what storage handed out needs no open session
        assert detail is not None and detail.record == record
        assert [c.revision for c in detail.history] == [record.revision, record.revision + 1]
        assert detail.open_conflicts == ["c-1", "c-2"]
        assert records.record_detail(record.record_id, OTHER_TOWNSHIP) is None
        assert records.record_detail("missing", "") is None

    def test_household_identity_is_village_plus_number(self) -> None:
        number = "5301020012010001"
        row = {"county_code": "530102", "household_no": number, "created_by_device": None}
        with writing():
            records.add_households([{**row, "village_code": VILLAGE_A, "revision": 1}])
        with writing():
            # The same household again (a second device, a replayed batch) is left as it was.
            records.add_households(
                [
                    {**row, "village_code": VILLAGE_A, "revision": 2},
                    {**row, "village_code": VILLAGE_B, "revision": 3},
                ]
            )
        stored = db.session.execute(
            sa.select(Household.village_code, Household.revision)
            .where(Household.household_no == number)
            .order_by(Household.village_code)
        ).all()
        assert [tuple(r) for r in stored] == [(VILLAGE_A, 1), (VILLAGE_B, 3)]

    def test_enrollment_code_is_single_use_and_expires(self) -> None:
        now = utcnow()
        with writing():
            live = enrollment.add_code(
                code_hash="a" * 64,
                scope=VILLAGE_A,
                expires_at=now + timedelta(days=1),
                created_by="t",
            )
            stale = enrollment.add_code(
                code_hash="b" * 64,
                scope=VILLAGE_A,
                expires_at=now - timedelta(seconds=1),
                created_by="t",
            )
        with writing():
            assert enrollment.claim(live.id, "dev-1", now) is True
        with writing():
            assert enrollment.claim(live.id, "dev-2", now) is False
            assert enrollment.claim(stale.id, "dev-3", now) is False
        assert enrollment.code_by_hash("a" * 64).device_id == "dev-1"
        with writing():
            assert enrollment.purge_expired(now) == 1
        assert enrollment.code_by_hash("b" * 64) is None

    def test_token_revocation(self) -> None:
        with writing():
            user = users.add_user(
                username="u", password_hash="x", role="county_admin", area_prefix=""
            )
            users.add_token(user_id=user.id, token_hash="t" * 64, expires_at=utcnow())
        with writing():
            assert users.revoke_token("t" * 64) is True
        with writing():
            assert users.revoke_token("t" * 64) is False
        token, _ = users.token_with_user("t" * 64)
        assert token.revoked_at is not None

    def test_devices_are_scoped_in_the_query(self) -> None:
        now = utcnow()
        with writing():
            for device_id, scope in (
                ("d-a", VILLAGE_A),
                ("d-t", "530102002"),
                ("d-c", OTHER_COUNTY),
            ):
                devices.add_device(
                    device_id=device_id,
                    x25519_public="x",
                    ed25519_public="e",
                    scope=scope,
                    enrolled_at=now,
                    enrollment_code_id=None,
                )
        assert {d.id for d in devices.list_devices("530102001")} == {"d-a"}
        assert {d.id for d in devices.list_devices("530102")} == {"d-a", "d-t"}
        assert {d.id for d in devices.list_devices("")} == {"d-a", "d-t", "d-c"}
        assert devices.device_in_area("d-c", "530102") is None
        with writing():
            assert devices.revoke("d-c", "530102", now) is False
            assert devices.revoke("d-a", "530102", now) is True
        assert devices.device_for_sync("d-a").status == "revoked"

    def test_publish_due_publishes_each_scheduled_version_once(self) -> None:
        now = utcnow()
        with writing():
            form_store.ensure_form("f", {"zh": "表"})
            due = form_store.add_version(
                form_id="f", version=1, definition={}, source="json", created_by="t"
            )
            later = form_store.add_version(
                form_id="f", version=2, definition={}, source="json", created_by="t"
            )
            form_store.set_scheduled(due, now - timedelta(minutes=1))
            form_store.set_scheduled(later, now + timedelta(hours=1))
        with writing():
            assert form_store.publish_due(now) == [("f", 1)]
        with writing():
            assert form_store.publish_due(now) == []
        assert [(v.version, v.status) for v in form_store.list_versions("f")] == [
            (2, "scheduled"),
            (1, "published"),
        ]
        with writing():
            assert form_store.publish_due(now + timedelta(hours=2)) == [("f", 2)]
        manifest = form_store.manifest_changes_since(0)
        assert [v.version for v in manifest] == [1, 2]

    def test_conflicts_open_once_close_once_and_stay_in_their_area(self) -> None:
        record = put()
        other = put(village=OTHER_TOWNSHIP)
        sides = {"base": 1, "mine": 2, "theirs": 3, "device_id": "dev-1"}
        with writing():
            assert conflict_store.open_conflict(
                conflict_id="c1",
                record_id=record.record_id,
                village_code=VILLAGE_A,
                kind="field",
                path="grade",
                **sides,
            )
            # The same conflict found again (a replayed batch) is not queued twice.
            assert not conflict_store.open_conflict(
                conflict_id="c1",
                record_id=record.record_id,
                village_code=VILLAGE_A,
                kind="field",
                path="grade",
                **sides,
            )
            conflict_store.open_conflict(
                conflict_id="c2",
                record_id=other.record_id,
                village_code=OTHER_TOWNSHIP,
                kind="field",
                path="grade",
                **sides,
            )
        assert conflict_store.conflict_in_area("c1", "530102001") is not None
        assert conflict_store.conflict_in_area("c2", "530102001") is None
        assert conflict_store.open_counts_by_device("530102001") == {"dev-1": 1}
        with writing():
            closed = conflict_store.close_conflicts(["c1", "c2"], status="resolved", by="u")
        with writing():
            again = conflict_store.close_conflicts(["c1"], status="superseded", by="u")
        assert closed == ["c1", "c2"] and again == []
        assert conflict_store.open_ids_for_record(record.record_id) == []
        assert conflict_store.closed_ids_by_record([record.record_id], "field") == {
            record.record_id: ["c1"]
        }

    def test_quarantined_ops_are_held_in_their_area_until_released(self) -> None:
        with writing():
            held = quarantine.hold(
                kind=quarantine.INVALID,
                op={"seq": 1},
                reasons=[{"code": "x"}],
                device_id=None,
                op_seq=1,
                village_code=VILLAGE_A,
            )
            quarantine.hold(
                kind=quarantine.OUT_OF_SCOPE,
                op={"seq": 2},
                reasons=[],
                device_id=None,
                op_seq=2,
                village_code="",
            )
        item_id = held.id
        assert quarantine.list_held("530102001")[1] == 1  # an unknown village is county-only
        assert quarantine.list_held("")[1] == 2
        assert quarantine.held_in_area(item_id, OTHER_TOWNSHIP) is None
        with writing():
            row = quarantine.held_in_area(item_id, "530102001", lock=True)
            assert row is not None
            quarantine.release(row, reasons={"mapped_to": 2})
        assert quarantine.list_held("530102001")[1] == 0
        assert quarantine.list_held("530102001", status=quarantine.RELEASED)[1] == 1

    def test_sync_state_claims_each_envelope_once_and_keeps_acks(self) -> None:
        with writing():
            devices.add_device(
                device_id="dev-1",
                x25519_public="x",
                ed25519_public="e",
                scope=VILLAGE_A,
                enrolled_at=utcnow(),
                enrollment_code_id=None,
            )
        with writing():
            mark = sync_state.lock_marks("dev-1")
            sync_state.set_high_water(mark, 3)
            sync_state.set_high_water(mark, 2)  # never backwards
            assert sync_state.claim_envelope("dev-1", 5)
            sync_state.store_acks("dev-1", [{"seq": 1, "status": "applied"}, {"seq": 2}])
        with writing():
            assert not sync_state.claim_envelope("dev-1", 5)  # a replay
            assert not sync_state.claim_envelope("dev-1", 4)
            assert sync_state.claim_envelope("dev-1", 6)
            assert sync_state.lock_marks("dev-1").high_water == 3
        assert sync_state.stored_acks("dev-1", [2, 3]) == {2: {"seq": 2}}

    def test_a_first_envelope_claim_creates_the_mark_and_touches_keep_what_is_not_said(
        self,
    ) -> None:
        with writing():
            devices.add_device(
                device_id="dev-2",
                x25519_public="x",
                ed25519_public="e",
                scope=VILLAGE_A,
                enrolled_at=utcnow(),
                enrollment_code_id=None,
            )
        assert devices.device_status("dev-2") == "active"
        assert devices.device_status("dev-none") is None
        with writing():
            # Enrolment made the mark row; a device enrolled before that did not have one.
            assert sync_state.lock_marks("dev-2").envelope_seq == 0
            db.session.execute(sa.delete(DeviceOpMark).where(DeviceOpMark.device_id == "dev-2"))
        with writing():
            # No mark row: the claim creates it, and a replay of the same envelope fails.
            assert sync_state.claim_envelope("dev-2", 1)
            assert not sync_state.claim_envelope("dev-2", 1)
            assert sync_state.lock_marks("dev-2").envelope_seq == 1
        first = utcnow()
        with writing():
            devices.touch_last_sync("dev-2", first, manifest_cursor=7, app="village-device/0.1.0")
        with writing():
            devices.touch_last_sync("dev-2", first + timedelta(minutes=1))  # says neither
        device = devices.device_for_sync("dev-2")
        assert device is not None
        assert (device.manifest_cursor, device.app) == (7, "village-device/0.1.0")
        assert device.last_sync_at == first + timedelta(minutes=1)

    def test_uploads_are_per_device_and_resume_where_they_stopped(self) -> None:
        with writing():
            _, created = upload_store.create_upload(
                sha256="a" * 64,
                size=10,
                content_type="image/jpeg",
                device_id="dev-1",
                village_code=VILLAGE_A,
            )
            again, created_again = upload_store.create_upload(
                sha256="a" * 64,
                size=10,
                content_type="image/jpeg",
                device_id="dev-1",
                village_code=VILLAGE_A,
            )
            upload_store.create_upload(
                sha256="a" * 64,
                size=10,
                content_type="image/jpeg",
                device_id="dev-2",
                village_code=VILLAGE_A,
            )
        assert created and not created_again and again.received_bytes == 0
        with writing():
            locked = upload_store.lock_upload("a" * 64, "dev-1")
            assert locked is not None
            upload_store.set_received(locked, 4)
        assert upload_store.get_upload("a" * 64, "dev-1").received_bytes == 4
        assert upload_store.get_upload("a" * 64, "dev-2").received_bytes == 0
        assert upload_store.completed_in_area("a" * 64, "530102") is None
        with writing():
            locked = upload_store.lock_upload("a" * 64, "dev-1")
            done = upload_store.set_received(locked, 10, complete=True)
        assert done.completed_at is not None
        assert upload_store.completed_in_area("a" * 64, "530102") is not None
        assert upload_store.completed_in_area("a" * 64, OTHER_COUNTY) is None
        later = utcnow() + timedelta(days=1)
        assert [(u.sha256, u.device_id) for u in upload_store.abandoned(later)] == [
            ("a" * 64, "dev-2")
        ]
        with writing():
            assert upload_store.delete_if_abandoned("a" * 64, "dev-2", later)
            assert not upload_store.delete_if_abandoned("a" * 64, "dev-1", later)  # complete
        assert upload_store.get_upload("a" * 64, "dev-2") is None

    def test_throttle_counts_hits_in_a_window(self) -> None:
        now = utcnow()
        with writing():
            throttle_store.lock_keys(["k", "other"])
            throttle_store.add_hit("k", now - timedelta(minutes=10))
            first = throttle_store.add_hit("k", now - timedelta(minutes=1))
            throttle_store.add_hit("k", now)
            throttle_store.add_hit("other", now)
        since = throttle_store.window_start(now, 300)
        count, oldest = throttle_store.hits_since("k", since)
        assert count == 2 and oldest == now - timedelta(minutes=1)
        with writing():
            throttle_store.delete_hits([first])
            throttle_store.purge_before("k", since)
        assert throttle_store.hits_since("k", now - timedelta(hours=1))[0] == 1
        with writing():
            assert throttle_store.purge_all_before(now + timedelta(seconds=1)) == 2

    def test_foreign_keys_are_enforced(self) -> None:
        with pytest.raises(ConstraintViolation) as refused, writing():
            records.add_change(record_id="missing", revision=1, kind="put", changes={})
        assert not isinstance(refused.value, Duplicate)

    def test_a_taken_key_raises_duplicate(self) -> None:
        account = {"password_hash": "x", "role": "county_admin", "area_prefix": ""}
        with writing():
            users.add_user(username="twice", **account)
        with pytest.raises(Duplicate), writing():
            users.add_user(username="twice", **account)
        assert users.user_by_name("twice") is not None  # the first one stays


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(sqlite_url, app_on) -> None:
    app = app_on(sqlite_url, SQLITE_BUSY_TIMEOUT_MS=1234)
    with app.app_context(), db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234


def test_a_held_write_lock_raises_storage_busy(database_url: str, app_on) -> None:
    """A writer that cannot get its lock in time gets :class:`StorageBusy` (retry later), on
    SQLite (the busy timeout runs out) and PostgreSQL (the lock timeout runs out) alike."""
    app = app_on(database_url, SQLITE_BUSY_TIMEOUT_MS=50)
    with app.app_context():
        with writing():
            user = users.add_user(
                username="held", password_hash="x", role="county_admin", area_prefix=""
            )
        with db.engine.connect() as holder:
            holder.execute(
                sa.text("UPDATE users SET display_name = 'holder' WHERE id = :id"), {"id": user.id}
            )
            with pytest.raises(StorageBusy), writing() as session:
                if db.engine.dialect.name == "postgresql":
                    session.execute(sa.text("SET LOCAL lock_timeout = '50ms'"))
                users.set_password_hash(user.id, "y")
            holder.rollback()


def test_a_new_sqlite_file_is_private(tmp_path, app_on) -> None:
    app = app_on(f"sqlite:///{tmp_path / 'fresh' / 'county.db'}")
    with app.app_context():
        put()
    for path in (tmp_path / "fresh").glob("county.db*"):
        assert path.stat().st_mode & 0o777 == 0o600, path


_BOOT_WORKER = """
import sys, time
from server import create_app

database_url, key_dir, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))
create_app({"DATABASE_URL": database_url, "KEY_DIR": key_dir, "TESTING": True})
"""


def test_app_processes_starting_together_migrate_once(database_url: str, app_on, tmp_path) -> None:
    """Several worker processes booting on one fresh database: one migrates, the others wait.

    Real processes, as behind a WSGI server: threads in one interpreter would also trip CPython
    3.11's thread-unsafe AST recursion counter (gh-106905) while Alembic compiles its scripts.
    """
    start_at = time.time() + 3.0  # all three past their imports, then migrating at once
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _BOOT_WORKER,
                database_url,
                str(tmp_path / "keys"),
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outcomes = [(worker.wait(timeout=180), worker.communicate()[1]) for worker in workers]
    assert [code for code, _ in outcomes] == [0, 0, 0], [err for _, err in outcomes]
    app = app_on(database_url, MIGRATE_ON_START=False)
    with app.app_context():
        assert schema.current_revision(db.engine) == schema.head_revision()


def test_upgrade_keeps_existing_data(database_url: str, app_on) -> None:
    """An upgrade never needs a wipe: rows written at the first revision survive to head."""
    from alembic import command
    from alembic.config import Config

    app = app_on(database_url, MIGRATE_ON_START=False)
    with app.app_context():
        with db.engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(schema.MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(
                sa.text(
                    "insert into users (username, password_hash, role, area_prefix, "
                    "display_name, active, created_at, password_changed_at) values "
                    "('old', 'h', 'county_admin', '', '', true, :t, :t)"
                ),
                {"t": utcnow().replace(tzinfo=None)},
            )
        assert schema.upgrade(db.engine) == schema.head_revision()
        assert users.user_by_name("old") is not None


_VILLAGE_SUFFIXES = ("001201", "001202", "002201")


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["put", "delete"]),
            st.integers(min_value=0, max_value=5),
            st.sampled_from(_VILLAGE_SUFFIXES),
        ),
        min_size=1,
        max_size=25,
    ),
    page_size=st.integers(min_value=1, max_value=7),
    scope_suffix=st.sampled_from(["", "001", "001201"]),
)
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_paging_always_yields_each_records_latest_state_once(
    app: Flask, steps: list[tuple[str, int, str]], page_size: int, scope_suffix: str
) -> None:
    """Whatever the writes, paging a scope from 0 yields every in-scope record exactly once,
    at its latest revision and deleted flag, in revision order; the final cursor is caught up."""
    # A fresh county per example keeps examples independent inside one database.
    county = f"{uuid.uuid4().int % 900000 + 100000}"
    ids = [str(uuid.uuid4()) for _ in range(6)]
    village_of: dict[str, str] = {}
    expected: dict[str, bool] = {}
    with app.app_context():
        for kind, index, suffix in steps:
            record_id = ids[index]
            if kind == "put":
                village = village_of.setdefault(record_id, county + suffix)
                put(record_id, village=village)
                expected[record_id] = False
            elif record_id in expected:
                assert delete(record_id) is not None
                expected[record_id] = True
        scope = county + scope_suffix
        seen, cursor = drain(scope, 0, page_size)
        latest = {rid: records.get_record(rid) for rid in expected}
        in_scope = {rid for rid in expected if village_of[rid].startswith(scope)}
        assert [rid for rid, _ in seen] == sorted(in_scope, key=lambda r: latest[r].revision)
        assert all(rev == latest[rid].revision for rid, rev in seen)
        assert all(latest[rid].deleted is expected[rid] for rid in in_scope)
        assert cursor == revisions.current_revision(county)


def test_migration_waits_out_a_sqlite_writer_longer_than_the_busy_timeout(
    sqlite_url: str, app_on
) -> None:
    """A process booting while another holds the write lock past the busy timeout retries the
    migration until the lock is free, rather than failing with "database is locked"."""
    from server.settings import sqlite_path

    path = sqlite_path(sqlite_url)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, lambda: holder.execute("ROLLBACK"))
    release.start()
    try:
        app = app_on(sqlite_url, SQLITE_BUSY_TIMEOUT_MS=50)
    finally:
        release.join()
        holder.close()
    with app.app_context():
        assert schema.current_revision(db.engine) == schema.head_revision()
