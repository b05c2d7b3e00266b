"""The device store: file safety, schema versioning, forms, the outbox, acks and server state."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from forms.instruments import builtin_json
from forms.paths import flatten
from sync_protocol.clock import Stamp
from sync_protocol.crypto import generate_server_keys
from sync_protocol.ops import TOMBSTONE, Op, OpFormatError, put_op
from tests.client.conftest import FakeClock
from village_client_stub.errors import (
    AckMismatch,
    DeviceError,
    StoreCorrupt,
    StoreExists,
    StoreNotFound,
    UnknownForm,
    UnknownRecord,
)
from village_client_stub.store import MIGRATIONS, DeviceStore


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _queue_put(
    store: DeviceStore,
    record_id: str,
    changes: dict,
    data: dict,
    base: dict | None = None,
) -> Op:
    return store.queue_op(
        lambda seq, stamp: put_op(
            device_id=store.device_id,
            seq=seq,
            record_id=record_id,
            form_id="housing_safety",
            form_version=1,
            changes=changes,
            base=base or {p: None for p in changes},
            hlc=stamp,
        ),
        record={
            "record_id": record_id,
            "form_id": "housing_safety",
            "form_version": 1,
            "household": {"village_code": "530102001201", "household_no": "0001"},
            "round": "2026-annual",
            "data": data,
        },
    )


# --- the file -----------------------------------------------------------------------------------


def test_new_store_is_owner_only_including_wal_files(store: DeviceStore, db_path: Path) -> None:
    _queue_put(store, "r1", {"storeys": 1}, {"storeys": 1})
    assert _mode(db_path) == 0o600
    for suffix in ("-wal", "-shm"):
        sidecar = Path(str(db_path) + suffix)
        if sidecar.exists():
            assert _mode(sidecar) == 0o600


def test_store_is_0600_even_with_a_permissive_umask(tmp_path: Path, clock: FakeClock) -> None:
    old = os.umask(0)
    try:
        DeviceStore.create(tmp_path / "open.db", now_ms=clock).close()
    finally:
        os.umask(old)
    assert _mode(tmp_path / "open.db") == 0o600


def test_opening_tightens_a_loosened_file(store: DeviceStore, db_path: Path) -> None:
    store.close()
    os.chmod(db_path, 0o644)
    DeviceStore.open(db_path).close()
    assert _mode(db_path) == 0o600


def test_a_failed_create_leaves_no_half_made_file(tmp_path: Path) -> None:
    def broken_clock() -> int:
        raise OSError("clock unavailable")

    target = tmp_path / "half.db"
    with pytest.raises(OSError):
        DeviceStore.create(target, now_ms=broken_clock)
    assert not target.exists()
    DeviceStore.create(target).close()  # and `init` can simply be run again


def test_schema_is_versioned(store: DeviceStore, db_path: Path) -> None:
    assert store.schema_version() == len(MIGRATIONS)
    store.close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreCorrupt) as info:
        DeviceStore.open(db_path)
    assert "升级" in info.value.message_zh


def test_create_refuses_an_existing_file_and_open_a_missing_one(
    store: DeviceStore, db_path: Path, tmp_path: Path
) -> None:
    with pytest.raises(StoreExists):
        DeviceStore.create(db_path)
    with pytest.raises(StoreNotFound):
        DeviceStore.open(tmp_path / "missing.db")


def test_open_refuses_files_that_are_not_device_stores(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreCorrupt):
        DeviceStore.open(garbage)
    # Somebody else's SQLite database is refused and left untouched (no tables of ours added).
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt):
        DeviceStore.open(other)
    conn = sqlite3.connect(other)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    conn.close()
    assert tables == ["notes"]


# --- identity and keys --------------------------------------------------------------------------


def test_identity_and_keys_survive_reopening(store: DeviceStore, db_path: Path) -> None:
    identity = store.identity()
    public = store.key_bundle().public_document()
    assert identity.public_keys == public
    assert identity.device_id.startswith("dev-")
    assert identity.server_url is None
    store.close()
    with DeviceStore.open(db_path) as again:
        assert again.identity().public_keys == public
        assert again.device_id == identity.device_id


def test_private_keys_never_appear_in_what_the_store_reports(store: DeviceStore) -> None:
    bundle = store.key_bundle()
    secrets = {bundle.encryption.to_base64(), bundle.signing.to_base64()}
    shown = repr(store.identity()) + repr(store.status()) + repr(bundle)
    assert not any(secret in shown for secret in secrets)


def test_enrollment_stores_server_keys_and_may_rename_an_unsent_device(
    store: DeviceStore,
) -> None:
    server = generate_server_keys()
    op = _queue_put(store, "r1", {"storeys": 1}, {"storeys": 1})
    assert op.device_id == store.device_id
    store.set_enrollment(
        server_url="http://127.0.0.1:5000",
        server_encryption_public=server.encryption_public.raw(),
        server_signing_public=server.signing_public.raw(),
        server_key_id=server.encryption_public.key_id(),
        scope="530102001201",
        device_id="dev-county-17",
    )
    assert store.identity().scope == "530102001201"
    assert store.server_keys() == (server.encryption_public, server.signing_public)
    assert [o.device_id for o in store.pending_ops()] == ["dev-county-17"]
    store.mark_sent([1])
    with pytest.raises(DeviceError):
        store.set_enrollment(
            server_url="http://127.0.0.1:5000",
            server_encryption_public=server.encryption_public.raw(),
            server_signing_public=server.signing_public.raw(),
            server_key_id=server.encryption_public.key_id(),
            scope="530102001201",
            device_id="dev-other",
        )


# --- forms --------------------------------------------------------------------------------------


def test_forms_are_stored_once_and_the_newest_version_is_current(store: DeviceStore) -> None:
    doc = builtin_json("housing_safety")
    store.put_form(doc)
    store.put_form(doc)  # same content again: fine
    newer = dict(doc, version=2)
    store.put_form(newer)
    summaries = store.forms()
    assert [(f.version, f.current) for f in summaries] == [(1, False), (2, True)]
    assert store.form("housing_safety").version == 2
    assert store.form("housing_safety", 1).version == 1
    changed = dict(doc, title={"zh": "改过的标题"})
    with pytest.raises(StoreCorrupt):
        store.put_form(changed)
    with pytest.raises(UnknownForm) as info:
        store.form("no_such_form")
    assert "没有表单" in info.value.message_zh


# --- the outbox ---------------------------------------------------------------------------------


def test_op_sequence_is_contiguous_and_stamps_only_go_up(
    store: DeviceStore, clock: FakeClock, db_path: Path
) -> None:
    stamps = []
    for i in range(5):
        op = _queue_put(store, f"r{i}", {"storeys": i}, {"storeys": i})
        stamps.append(Stamp.parse(op.hlc))
        clock.advance(-10_000)  # the tablet's clock runs backwards
    assert [o.seq for o in store.pending_ops()] == [1, 2, 3, 4, 5]
    assert stamps == sorted(stamps) and len(set(stamps)) == 5
    store.close()
    # Reopened with the clock still behind, the next stamp is still later than every earlier one.
    with DeviceStore.open(db_path, now_ms=clock) as again:
        op = _queue_put(again, "r9", {"storeys": 9}, {"storeys": 9})
        assert op.seq == 6
        assert Stamp.parse(op.hlc) > stamps[-1]


def test_two_processes_on_one_file_never_share_a_seq(store: DeviceStore, db_path: Path) -> None:
    """A CLI run and the sync client may write at once; numbering stays contiguous."""
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            with DeviceStore.open(db_path) as own:
                for i in range(15):
                    _queue_put(own, f"{prefix}{i}", {"storeys": i}, {"storeys": i})
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert [op.seq for op in store.pending_ops()] == list(range(1, 31))
    stamps = [op.hlc for op in store.pending_ops()]
    assert stamps == sorted(stamps) and len(set(stamps)) == 30


def test_seq_numbers_are_not_reused_after_acks(store: DeviceStore) -> None:
    _queue_put(store, "r1", {"storeys": 1}, {"storeys": 1})
    _queue_put(store, "r2", {"storeys": 2}, {"storeys": 2})
    store.mark_sent([1, 2])
    store.mark_acked([1, 2], [{"seq": 1, "status": "applied"}, {"seq": 2, "status": "duplicate"}])
    assert store.pending_ops() == []
    assert _queue_put(store, "r3", {"storeys": 3}, {"storeys": 3}).seq == 3


def test_a_malformed_op_writes_nothing(store: DeviceStore) -> None:
    with pytest.raises(OpFormatError):
        _queue_put(store, "r1", {"bad//path": 1}, {"storeys": 1})
    assert store.pending_ops() == []
    assert store.records() == []
    assert store.sync_state().last_seq == 0


def test_pending_ops_limit_and_sent_ops_are_resent(store: DeviceStore) -> None:
    for i in range(4):
        _queue_put(store, f"r{i}", {"storeys": i}, {"storeys": i})
    assert [o.seq for o in store.pending_ops(limit=2)] == [1, 2]
    store.mark_sent([1, 2])
    # The exchange carrying 1 and 2 was lost: they go out again, before 3 and 4.
    assert [o.seq for o in store.pending_ops()] == [1, 2, 3, 4]
    assert [e.attempts for e in store.outbox()] == [1, 1, 0, 0]


def test_acks_remove_ops_keep_rejections_and_record_conflicts(store: DeviceStore) -> None:
    first = _queue_put(store, "r1", {"storeys": 1}, {"storeys": 1})
    _queue_put(store, "r2", {"storeys": 2}, {"storeys": 2})
    _queue_put(store, "r3", {"appraisal_grade": "C"}, {"appraisal_grade": "C"})
    _queue_put(store, "r4", {"storeys": 4}, {"storeys": 4})
    store.mark_sent([1, 2, 3])
    reasons = [{"code": "required", "path": "storeys", "message": {"zh": "必填", "en": "req"}}]
    summary = store.mark_acked(
        [1, 2, 3],
        [
            {"seq": 1, "status": "applied", "revision": 1},
            {"seq": 2, "status": "rejected", "reasons": reasons},
            {"seq": 3, "status": "conflict", "conflict_ids": ["c-1"]},
        ],
    )
    assert summary.removed == [1, 3]
    assert summary.rejected == [2]
    assert summary.conflicts == ["c-1"]
    assert summary.acked_through == 3  # 2 was processed (rejected) too; 4 is outstanding
    assert [o.seq for o in store.pending_ops()] == [4]
    (rejected,) = store.rejected_ops()
    assert rejected.seq == 2 and rejected.reasons == reasons
    assert [c["conflict_id"] for c in store.conflicts()] == ["c-1"]
    # The acked op's own stamp is now the base the device saw for the path it wrote.
    assert store.record("r1").stamps == {"storeys": first.hlc}
    # A replay of the same acks changes nothing.
    again = store.mark_acked(
        [1, 2, 3],
        [
            {"seq": 1, "status": "applied"},
            {"seq": 2, "status": "rejected"},
            {"seq": 3, "status": "conflict", "conflict_ids": ["c-1"]},
        ],
    )
    assert again.removed == [] and again.rejected == []
    assert len(store.rejected_ops()) == 1


@pytest.mark.parametrize(
    "acks",
    [
        [{"seq": 1, "status": "applied"}],  # 2 missing
        [{"seq": 1, "status": "applied"}, {"seq": 2, "status": "applied"}, {"seq": 3}],
        [{"seq": 1, "status": "applied"}, {"seq": 2, "status": "bogus"}],
        [{"seq": 1, "status": "applied"}, {"seq": 1, "status": "applied"}],
        [{"seq": 1, "status": "applied"}, {"seq": 7, "status": "applied"}],
    ],
)
def test_unverifiable_acks_change_nothing(store: DeviceStore, acks: list) -> None:
    _queue_put(store, "r1", {"storeys": 1}, {"storeys": 1})
    _queue_put(store, "r2", {"storeys": 2}, {"storeys": 2})
    store.mark_sent([1, 2])
    with pytest.raises(AckMismatch):
        store.mark_acked([1, 2], acks)
    assert [o.seq for o in store.pending_ops()] == [1, 2]
    assert store.sync_state().acked_through == 0


def test_mark_rejected_needs_an_outstanding_op(store: DeviceStore) -> None:
    _queue_put(store, "r1", {"storeys": 1}, {"storeys": 1})
    store.mark_rejected(1, [{"code": "constraint", "path": "storeys"}])
    assert store.rejected_ops()[0].reasons == [{"code": "constraint", "path": "storeys"}]
    assert store.sync_state().acked_through == 1
    with pytest.raises(AckMismatch):
        store.mark_rejected(1, [])
    with pytest.raises(AckMismatch):
        store.mark_rejected(99, [])


# --- server state -------------------------------------------------------------------------------


def _server_state(revision: int, data: dict, stamps: dict, deleted: bool = False) -> dict:
    """A record's device view as the server sends it (``sync_protocol.merge.device_view``)."""
    return {
        "record_id": "r1",
        "form_id": "household_roster",
        "form_version": 1,
        "household": {"village_code": "530102001201", "household_no": "0001"},
        "round": "2026-annual",
        "values": flatten(data),
        "stamps": stamps,
        "revision": revision,
        "deleted": deleted,
        "conflicts": [],
    }


def test_server_state_replaces_the_record_and_keeps_outstanding_edits(
    store: DeviceStore,
) -> None:
    s1 = Stamp(1_700_000_000_000, 0, "dev-a").to_text()
    members = [{"_id": "m1", "name": "张三"}, {"_id": "m2", "name": "李四"}]
    assert store.apply_server_state(
        _server_state(3, {"phone": "13800000000", "members": members}, {"phone": s1})
    )
    record = store.record("r1")
    assert record.server_revision == 3 and record.stamps == {"phone": s1}
    assert record.data["members"][1]["name"] == "李四"
    # The device edits the phone and deletes a row; the server then sends a newer state with
    # someone else's change: both survive locally until the device's ops are acked.
    store.queue_op(
        lambda seq, stamp: put_op(
            device_id=store.device_id,
            seq=seq,
            record_id="r1",
            form_id="household_roster",
            form_version=1,
            changes={"phone": "13900000000", "members/m2": TOMBSTONE},
            base={"phone": s1, "members/m2": None},
            hlc=stamp,
            base_revision=3,
        ),
        record={
            "record_id": "r1",
            "form_id": "household_roster",
            "form_version": 1,
            "household": None,
            "round": None,
            "data": {"phone": "13900000000", "members": members[:1]},
        },
    )
    store.apply_server_state(
        _server_state(
            4,
            {"phone": "13800000000", "natural_village": "上村", "members": members},
            {"phone": s1},
        )
    )
    data = store.record("r1").data
    assert data["phone"] == "13900000000"
    assert data["natural_village"] == "上村"
    assert [m["_id"] for m in data["members"]] == ["m1"]
    # An older state arriving late is ignored.
    assert not store.apply_server_state(_server_state(2, {}, {}))
    assert store.record("r1").server_revision == 4


def test_server_state_can_delete_and_must_be_well_formed(store: DeviceStore) -> None:
    store.apply_server_state(_server_state(1, {"phone": "1"}, {}, deleted=True))
    assert store.records() == []
    assert store.records(include_deleted=True)[0].deleted
    with pytest.raises(DeviceError):
        store.apply_server_state({"record_id": "r2"})


def test_find_record_by_unique_prefix(store: DeviceStore) -> None:
    _queue_put(store, "abc-111", {"storeys": 1}, {"storeys": 1})
    _queue_put(store, "abd-222", {"storeys": 2}, {"storeys": 2})
    assert store.find_record("abc").record_id == "abc-111"
    with pytest.raises(UnknownRecord):
        store.find_record("ab")
    with pytest.raises(UnknownRecord):
        store.find_record("zzz")
    with pytest.raises(UnknownRecord):
        store.find_record("a%")


# --- sync state, cursors, clock, attachments ----------------------------------------------------


def test_cursors_clock_and_last_sync(store: DeviceStore, clock: FakeClock) -> None:
    assert store.cursor("530102001201") is None
    with store.transaction():
        store.set_cursor("530102001201", "17")
        store.set_cursor("530102001201", "3", stream="forms")
    assert store.cursor("530102001201") == "17"
    # The server is an hour ahead: the next local stamp follows the server's time.
    store.observe_server_time(clock.ms + 3_600_000)
    op = _queue_put(store, "r1", {"storeys": 1}, {"storeys": 1})
    assert Stamp.parse(op.hlc).ms >= clock.ms + 3_600_000
    store.record_sync_result(ok=False, error="connection reset")
    assert store.sync_state().last_error == "connection reset"
    store.record_sync_result(ok=True)
    state = store.sync_state()
    assert state.last_sync_at is not None and state.last_error is None
    assert state.cursors == {"530102001201": {"forms": "3", "records": "17"}}


def test_attachments_are_content_addressed_and_offsets_only_advance(
    store: DeviceStore, tmp_path: Path
) -> None:
    photo = tmp_path / "house.jpg"
    photo.write_bytes(b"\xff\xd8" + b"x" * 5000)
    address = store.add_attachment(photo, record_id="r1")
    assert address.startswith("sha256:") and len(address) == 7 + 64
    assert store.add_attachment(photo) == address  # same bytes, same entry
    digest = address.removeprefix("sha256:")
    store.confirm_upload_offset(digest, 4096)
    store.confirm_upload_offset(digest, 1024)  # a stale confirmation does not go backwards
    (entry,) = store.attachments(unfinished=True)
    assert entry["confirmed_offset"] == 4096 and entry["size"] == 5002
    store.confirm_upload_offset(digest, 10_000)
    assert store.attachments(unfinished=True) == []
    with pytest.raises(DeviceError):
        store.add_attachment(tmp_path / "missing.jpg")


def test_an_attached_photo_is_copied_owner_only_and_survives_the_original(
    store: DeviceStore, tmp_path: Path
) -> None:
    photo = tmp_path / "house.jpg"
    photo.write_bytes(b"\xff\xd8" + b"y" * 3000)
    digest = store.add_attachment(photo).removeprefix("sha256:")
    photo.write_bytes(b"edited afterwards")
    (entry,) = store.attachments(unfinished=True)
    kept = Path(entry["path"])
    assert kept == (store.photos_dir() / digest).resolve()
    assert kept.read_bytes() == b"\xff\xd8" + b"y" * 3000
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.photos_dir().stat().st_mode) == 0o700
    assert [p.name for p in store.photos_dir().iterdir()] == [digest]
    store.note_upload_error(digest, "服务器拒绝", "server refused")
    (unfinished,) = store.status()["photos_unfinished"]
    assert unfinished["reason"] == {"zh": "服务器拒绝", "en": "server refused"}
