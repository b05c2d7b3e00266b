"""Generator of the language-neutral conformance vectors in ``sync_protocol/vectors/conformance/``.

Each file is ``{"format": "village-sync-conformance", "version": 1, "about": ..., "cases":
[{"id", "check", "input", "expect"}, ...]}``; ``expect`` is what the Python reference
(:mod:`tests.sync_protocol.conformance_python`) answers. Regenerate after a deliberate change:

    .venv/bin/python -m tests.sync_protocol.conformance_builder

``tests/sync_protocol/test_conformance.py`` fails when the committed files differ from what this
module builds, so the vectors never drift from the engines.
"""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

from forms.identity import id_check_char
from forms.indicators import MonitoringConfig
from forms.instruments import load_builtin
from forms.instruments.samples import (
    DEFAULT_TODAY,
    DEFAULT_VILLAGE_CODE,
    PROBLEM_CASES,
    problem_household,
    sample_household,
)
from sync_protocol.codec import batch_to_json, canonical_json
from sync_protocol.ops import TOMBSTONE, delete_op, put_op, resolve_op
from tests.sync_protocol.conformance_python import answer

__all__ = ["VECTOR_DIR", "build_all", "write_all"]

VECTOR_DIR = Path(__file__).resolve().parents[2] / "sync_protocol" / "vectors" / "conformance"

RECORD = "6f1c9a52-61c9-4d7e-9a0b-0d6f4f1d2a11"
HOUSEHOLD = {"village_code": "530102001201", "household_no": "0001"}
CREATED = "019ab697e800-0000-tab-a"
T0 = 1764000000000  # 019ab697e800
STAMP_A = "019ab698d260-0000-tab-a"
STAMP_B = "019ab6985d30-0000-tab-b"
HOUSING_POLICY = {"appraisal_grade": "review", "income": "review", "*": "lww"}


def _case(case_id: str, check: str, data: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(canonical_json(data))
    return {"id": case_id, "check": check, "input": data, "expect": answer(check, data)}


def _doc(about: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": "village-sync-conformance", "version": 1, "about": about, "cases": cases}


# --- ops of the worked examples (protocol-merge.md §9) -------------------------------------------


def _put(
    device: str, seq: int, hlc: str, changes: dict[str, Any], base: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    return put_op(
        device_id=device,
        seq=seq,
        record_id=RECORD,
        form_id="housing_safety",
        form_version=1,
        household=kw.get("household"),
        round=kw.get("round"),
        changes=changes,
        base=base,
        hlc=hlc,
        base_revision=kw.get("base_revision", 1),
    ).to_dict()


def _creation() -> dict[str, Any]:
    return _put(
        "tab-a",
        1,
        CREATED,
        {"appraisal_grade": "B", "structure": "砖混", "build_year": 1998},
        {},
        household=HOUSEHOLD,
        round="2026-annual",
        base_revision=0,
    )


def _step(op: dict[str, Any], server_ms: int = T0 + 60_000) -> dict[str, Any]:
    return {"op": op, "server_ms": server_ms}


def _merge_cases() -> list[dict[str, Any]]:
    seen = {"appraisal_grade": CREATED, "build_year": CREATED, "structure": CREATED}
    create = _step(_creation(), T0)
    cases: list[tuple[str, list[dict[str, Any]]]] = []
    a_structure = _put("tab-a", 2, STAMP_A, {"structure": "钢筋混凝土"}, {"structure": CREATED})
    b_year = _put("tab-b", 1, STAMP_B, {"build_year": 1996}, {"build_year": CREATED})
    cases.append(("1-disjoint-fields", [create, _step(a_structure), _step(b_year)]))
    cases.append(("1-disjoint-fields-other-order", [create, _step(b_year), _step(a_structure)]))
    a_grade = _put("tab-a", 2, STAMP_A, {"appraisal_grade": "C"}, {"appraisal_grade": CREATED})
    b_grade = _put("tab-b", 1, STAMP_B, {"appraisal_grade": "D"}, {"appraisal_grade": CREATED})
    review = [create, _step(a_grade), _step(b_grade)]
    cases.append(("2-review-conflict", review))
    cases.append(("2-review-conflict-other-order", [create, _step(b_grade), _step(a_grade)]))
    b_structure = _put("tab-b", 1, STAMP_B, {"structure": "轻钢"}, {"structure": CREATED})
    cases.append(("3-lww-race", [create, _step(a_structure), _step(b_structure)]))
    cases.append(("3-lww-race-other-order", [create, _step(b_structure), _step(a_structure)]))
    c_structure = _put(
        "tab-c", 1, "019abbbe4400-0000-tab-c", {"structure": "土坯"}, {"structure": CREATED}
    )
    cases.append(
        ("4-suspect-clock", [create, _step(a_structure), _step(c_structure, T0 + 100_000)])
    )
    cases.append(("4-suspect-clock-alone", [create, _step(c_structure, T0 + 100_000)]))
    delete = delete_op(
        device_id="tab-a",
        seq=2,
        record_id=RECORD,
        form_id="housing_safety",
        form_version=1,
        base=seen,
        hlc=STAMP_A,
        base_revision=1,
    ).to_dict()
    cases.append(("5-delete-alone", [create, _step(delete)]))
    cases.append(("5-delete-vs-edit", [create, _step(delete), _step(b_year)]))
    row = "members/7c1e"
    row_stamp = "019ab6980f10-0000-tab-a"
    add_row = _put("tab-a", 2, row_stamp, {f"{row}/name": "王五", f"{row}/_order": 0}, {})
    add_other = _put(
        "tab-b", 1, STAMP_B, {"members/9d02/name": "赵六", "members/9d02/_order": 1}, {}
    )
    drop_row = _put(
        "tab-a",
        3,
        "019ab6988440-0000-tab-a",
        {row: TOMBSTONE},
        {f"{row}/_order": row_stamp, f"{row}/name": row_stamp},
    )
    rename = _put("tab-b", 1, STAMP_B, {f"{row}/name": "王武"}, {f"{row}/name": row_stamp})
    cases.append(("6-repeat-rows", [create, _step(add_row), _step(add_other), _step(drop_row)]))
    cases.append(("6-row-delete-vs-edit", [create, _step(add_row), _step(drop_row), _step(rename)]))
    phone1 = _put("tab-a", 2, STAMP_A, {"structure": "砖木"}, {"structure": CREATED})
    phone2 = _put(
        "tab-b", 1, "019ab699bcc0-0000-tab-b", {"structure": "钢结构"}, {"structure": STAMP_A}
    )
    cases.append(("7-late-superseded", [create, _step(phone2), _step(phone1)]))
    cases.append(("8-replayed-op-is-duplicate", [create, _step(a_grade), _step(a_grade)]))
    out = [
        _case(f"merge-{name}", "merge.run", {"policies": HOUSING_POLICY, "steps": steps})
        for name, steps in cases
    ]
    by_id = {case["id"]: case["expect"] for case in out}
    # Resolution of example 2 by the county server, then the resolved state.
    conflicted = by_id["merge-2-review-conflict"]["state"]
    conflict_id = by_id["merge-2-review-conflict"]["results"][2]["conflicts"][0]["conflict_id"]
    out.append(
        _case(
            "resolution-2-review",
            "state.resolution",
            {"state": conflicted, "conflict_id": conflict_id, "chosen": {"appraisal_grade": "D"}},
        )
    )
    changes = out[-1]["expect"]
    resolve = resolve_op(
        device_id="server",
        seq=1,
        record_id=RECORD,
        form_id="housing_safety",
        form_version=1,
        conflict_id=conflict_id,
        changes=changes["changes"],
        base=changes["base"],
        hlc="019ab699bcc0-0000-server",
        base_revision=3,
    ).to_dict()
    out.append(
        _case(
            "merge-2-review-resolved",
            "merge.run",
            {"policies": HOUSING_POLICY, "state": conflicted, "steps": [_step(resolve)]},
        )
    )
    deleted_row = by_id["merge-6-repeat-rows"]["state"]
    out.append(
        _case(
            "bases-after-row-delete",
            "state.bases",
            {
                "state": deleted_row,
                "paths": ["structure", "members/7c1e/name", "members/9d02/name", "income"],
                "delete_scopes": ["", "members/9d02", "members/7c1e"],
            },
        )
    )
    out.append(
        _case(
            "bases-of-a-review-conflict",
            "state.bases",
            {"state": conflicted, "paths": ["appraisal_grade"], "delete_scopes": [""]},
        )
    )
    return out


# --- record states read strictly -------------------------------------------------------------------


def _state_cases(merged: dict[str, Any]) -> list[dict[str, Any]]:
    good = dict(merged)
    cases = [_case("state-valid", "state.decode", {"state": good})]
    cases.append(
        _case(
            "state-unknown-top-level-keys-ignored",
            "state.decode",
            {"state": {**good, "warnings": [{"code": "w"}], "closed_conflicts": ["c-1"]}},
        )
    )
    bad_ops = [dict(op) for op in good["ops"]]
    bad_ops[0]["q"] = 0
    cases.append(_case("state-seq-zero", "state.decode", {"state": {**good, "ops": bad_ops}}))
    cases.append(_case("state-format-2", "state.decode", {"state": {**good, "format": 2}}))
    return cases


# --- messages ----------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


def _message_cases(merged_state: dict[str, Any]) -> list[dict[str, Any]]:
    hello = {
        "type": "hello",
        "device_id": "tab-a",
        "cursors": {"530102001201": 17, "manifest": 4},
        "high_water_mark": 12,
        "clock": "019ab697e800-0003-tab-a",
        "capabilities": {"suites": [1], "compression": [0, 1], "dictionary_ids": []},
    }
    creation = _creation()
    batch = {"type": "batch", "batch_seq": 1, "ops": batch_to_json([_op(creation)])}
    applied = {"seq": 13, "status": "applied", "revision": 1}
    conflict = {"seq": 14, "status": "conflict", "revision": 3, "conflict_ids": ["c-00"]}
    rejected = {
        "seq": 15,
        "status": "rejected",
        "revision": 0,
        "reasons": [
            {
                "code": "required",
                "path": "build_year",
                "row": None,
                "field": "build_year",
                "message": {"zh": "必填", "en": "required"},
                "severity": "error",
            }
        ],
    }
    reply = {
        "type": "reply",
        "server_time_ms": T0,
        "backoff_ms": 0,
        "frames": [
            {"index": 0, "status": "committed"},
            {"index": 1, "status": "committed"},
            {"index": 2, "status": "truncated"},
        ],
        "acks": [
            {
                "batch_seq": 1,
                "acks": [applied, conflict, rejected],
                "high_water_mark": 15,
                "records": [merged_state],
            }
        ],
        "downloads": [
            {
                "scope": "530102001201",
                "after": 17,
                "next_cursor": 18,
                "more": False,
                "records": [merged_state],
            },
            {
                "scope": "manifest",
                "after": 4,
                "next_cursor": 4,
                "more": False,
                "forms": [
                    {
                        "form_id": "housing_safety",
                        "version": 1,
                        "status": "retired",
                        "manifest_revision": 4,
                        "definition": {"id": "housing_safety", "version": 1},
                    }
                ],
                "config": [
                    {
                        "key": "server_keys",
                        "current_key_id": "0123456789abcdef",
                        "encryption_public": "AAAA",
                        "encryption_key_id": "0123456789abcdef",
                        "signing_public": "AAAA",
                        "signing_key_id": "fedcba9876543210",
                    }
                ],
            },
        ],
    }
    refusal = {
        "type": "reply",
        "server_time_ms": T0,
        "backoff_ms": 0,
        "frames": [],
        "acks": [],
        "downloads": [],
        "refusal": {"code": "clock_skew", "message": "the clock is off", "message_zh": "时钟不准"},
    }
    legacy_ack = {**applied, "conflict_ids": [], "reasons": []}
    task_entry = {
        "task_id": "9b2f6c1e-0000-4000-8000-000000000017",
        "household": {"village_code": "530102001201", "household_no": "0017"},
        "status": "open",
        "reasons": [
            {
                "code": "insurance_not_enrolled",
                "source": "dept:medical_insurance",
                "message": {"zh": "户籍成员在医保名单中未参保", "en": "not enrolled"},
                "details": {"member": "王五"},
            }
        ],
        "deadline": "2026-12-14",
        "escalated": False,
        "outcome": None,
        "record_id": "5d0f6f4e-3c8b-5a1e-9d2a-0f6b1c2d3e4f",
        "round": "task-9b2f6c1e000040008000000000000",
        "revision": 3,
    }
    tasks_page = {
        "scope": "tasks",
        "after": 2,
        "next_cursor": 3,
        "more": False,
        "tasks": [task_entry],
    }
    cases = [
        ("hello-browser", hello),
        ("hello-tasks-stream", {**hello, "cursors": {**hello["cursors"], "tasks": 2}}),
        ("reply-tasks-page", {**reply, "downloads": [*reply["downloads"], tasks_page]}),
        (
            "reply-task-without-id",
            {
                **reply,
                "downloads": [{**tasks_page, "tasks": [{"household": task_entry["household"]}]}],
            },
        ),
        (
            "hello-lean-acks",
            {**hello, "capabilities": {**hello["capabilities"], "lean_acks": True}},
        ),
        (
            "hello-lean-downloads",
            {
                **hello,
                "capabilities": {
                    **hello["capabilities"],
                    "lean_acks": True,
                    "lean_downloads": True,
                },
            },
        ),
        (
            "reply-lean-seqs",
            {
                **reply,
                "acks": [
                    {
                        **reply["acks"][0],
                        "acks": [{**applied, "seq": 7}],
                        "records": [],
                        "lean_seqs": [7],
                    }
                ],
            },
        ),
        (
            "reply-lean-seq-of-a-conflict",
            {**reply, "acks": [{**reply["acks"][0], "acks": [conflict], "lean_seqs": [14]}]},
        ),
        (
            "hello-without-dictionary-ids",
            {**hello, "capabilities": {"suites": [2, 1], "compression": [1, 0]}},
        ),
        ("hello-unknown-key", {**hello, "colour": "blue"}),
        ("hello-device-id-with-space", {**hello, "device_id": "tab a"}),
        ("hello-device-id-too-long", {**hello, "device_id": "d" * 65}),
        ("hello-clock-capitals", {**hello, "clock": "019AB697E800-0003-tab-a"}),
        ("hello-bad-scope", {**hello, "cursors": {"5301 02": 0}}),
        ("hello-no-suites", {**hello, "capabilities": {"suites": [], "compression": [0]}}),
        ("batch-one-op", batch),
        ("batch-seq-zero", {**batch, "batch_seq": 0}),
        ("batch-codec-version-2", {**batch, "ops": [2, [], []]}),
        ("reply-full", reply),
        ("reply-refusal", refusal),
        (
            "reply-legacy-empty-ack-lists",
            {**reply, "acks": [{**reply["acks"][0], "acks": [legacy_ack], "records": []}]},
        ),
        (
            "reply-conflict-without-ids",
            {
                **reply,
                "acks": [{**reply["acks"][0], "acks": [{**conflict, "conflict_ids": []}]}],
            },
        ),
        (
            "reply-applied-with-reasons",
            {
                **reply,
                "acks": [
                    {
                        **reply["acks"][0],
                        "acks": [{**applied, **rejected, "seq": 1, "status": "applied"}],
                    }
                ],
            },
        ),
        ("reply-refusal-with-downloads", {**refusal, "downloads": reply["downloads"]}),
        (
            "reply-rejected-frame-without-code",
            {**reply, "frames": [{"index": 1, "status": "rejected"}]},
        ),
        ("unknown-type", {**hello, "type": "greeting"}),
    ]
    out = [_case(name, "message.decode", {"payload_text": _text(body)}) for name, body in cases]
    spaced = json.dumps(hello, ensure_ascii=False, indent=1)
    out.append(_case("hello-not-canonical-is-read", "message.decode", {"payload_text": spaced}))
    return out


def _op(data: dict[str, Any]) -> Any:
    from sync_protocol.ops import Op

    return Op.from_dict(data)


# --- framing, stamps, clock ---------------------------------------------------------------------------


def _framing_cases() -> list[dict[str, Any]]:
    one, two = "56534500" + "01" * 8, "56534500" + "02" * 12
    body = answer("frames.encode", {"envelopes_hex": [one, two]})["body_hex"]
    return [
        _case("frames-two", "frames.encode", {"envelopes_hex": [one, two]}),
        _case("frames-read-two", "frames.decode", {"body_hex": body}),
        _case("frames-empty-body", "frames.decode", {"body_hex": ""}),
        _case("frames-cut-in-second", "frames.decode", {"body_hex": body[:-6]}),
        _case("frames-cut-in-prefix", "frames.decode", {"body_hex": body[: 2 * (4 + 12) + 4]}),
        _case("frames-zero-length", "frames.decode", {"body_hex": body[: 2 * 16] + "00000000"}),
        _case("frames-over-8-mib", "frames.decode", {"body_hex": "00800001" + "00" * 4}),
    ]


def _clock_cases() -> list[dict[str, Any]]:
    cases = [
        _case(f"stamp-{name}", "stamp.parse", {"text": text})
        for name, text in [
            ("example", "019ab697e800-0003-dev-7f3a"),
            ("server-node", "019ab699bcc0-0000-server"),
            ("capitals", "019AB697E800-0003-dev-7f3a"),
            ("short-ms", "19ab697e800-0003-dev-7f3a"),
            ("space-in-node", "019ab697e800-0003-dev 7f3a"),
            ("node-65-chars", "019ab697e800-0003-" + "n" * 65),
            ("non-ascii-node", "019ab697e800-0003-设备"),
        ]
    ]
    runs = {
        "wall-advances": [{"wall": T0}, {"wall": T0 + 5}, {"wall": T0 + 5}, {"wall": T0 + 6}],
        "wall-jumps-back": [{"wall": T0}, {"wall": T0 - 60_000}, {"wall": T0 - 30_000}],
        "observe-remote-ahead": [
            {"wall": T0},
            {"wall": T0 + 1, "observe": "019ab697f1f0-0007-tab-b"},
            {"wall": T0 + 2},
        ],
        "observe-server-time": [
            {"wall": T0 - 5000},
            {"wall": T0 - 4000, "observe": T0},
            {"wall": T0 - 3000},
            {"wall": T0 + 10, "observe": T0},
        ],
        "observe-equal-ms": [{"wall": T0}, {"wall": T0, "observe": "019ab697e800-0009-tab-b"}],
    }
    for name, events in runs.items():
        cases.append(_case(f"clock-{name}", "clock.run", {"node": "tab-a", "events": events}))
    cases.append(
        _case(
            "clock-counter-overflow",
            "clock.run",
            {"node": "tab-a", "last": "019ab697e800-ffff-tab-a", "events": [{"wall": T0}]},
        )
    )
    cases.append(
        _case(
            "clock-restored-last",
            "clock.run",
            {"node": "tab-a", "last": "019ab697e800-0004-tab-a", "events": [{"wall": T0 - 1}]},
        )
    )
    for name, stamp, server in [
        ("ahead-by-limit", "019ab69ad6e0-0000-tab-c", T0),  # exactly +300,000 ms
        ("ahead-past-limit", "019ab69ad6e1-0000-tab-c", T0),
        ("behind-a-day", "019ab1717000-0000-tab-c", T0),
    ]:
        cases.append(
            _case(
                f"suspect-{name}",
                "clock.suspect",
                {"stamp": stamp, "server_ms": server, "max_drift_ms": 300_000},
            )
        )
    return cases


# --- paths, records, indicators ------------------------------------------------------------------------


def _path_cases() -> list[dict[str, Any]]:
    roster = sample_household(3)["household_roster"]
    return [
        _case(
            "flatten-rows-and-empties",
            "paths.flatten",
            {
                "data": {
                    "name": "李四",
                    "note": None,
                    "aid": [],
                    "tags": ["a", "b"],
                    "location": {"lat": 24.9, "lon": 102.9},
                    "members": [
                        {
                            "_id": "r1",
                            "name": "王五",
                            "visits": [{"_id": "v1", "date": "2026-03-01"}],
                        },
                        {"_id": "r2", "name": "赵六"},
                    ],
                }
            },
        ),
        _case("flatten-roster-sample", "paths.flatten", {"data": roster}),
    ]


def _context_config() -> tuple[MonitoringConfig, dict[str, Any]]:
    monitoring = MonitoringConfig.from_mapping({"monitoring_lines": {"53": {"2026": 8700.0}}})
    return monitoring, monitoring.evaluation_config(DEFAULT_VILLAGE_CODE, DEFAULT_TODAY.year)


def _full_width(number: str) -> str:
    """The number in full-width digits (what a Chinese input method types), e.g. ５３０１…."""
    return "".join(chr(ord(ch) + 0xFEE0) if ch.isdigit() else ch for ch in number)


def _lower_x(number: str) -> str:
    """A valid number of the same birth date and sex ending in ``x`` (lower case)."""
    for sequence in range(100):
        first17 = f"{number[:14]}{sequence:02d}{number[16]}"
        if id_check_char(first17) == "X":
            return first17 + "x"
    raise AssertionError("no sequence gives a check character X")  # pragma: no cover


def _record_cases() -> list[dict[str, Any]]:
    monitoring, config = _context_config()
    today = DEFAULT_TODAY.isoformat()
    households = {f"sample-{seed}": sample_household(seed) for seed in (1, 2, 7)}
    households.update(
        {f"problem-{case}": problem_household(case) for case in sorted(PROBLEM_CASES)}
    )
    cases = []
    for name, records in households.items():
        for form_id, data in records.items():
            cases.append(
                _case(
                    f"validate-{name}-{form_id}",
                    "record.validate",
                    {
                        "form_id": form_id,
                        "form_version": load_builtin(form_id).version,
                        "today": today,
                        "config": config,
                        "data": data,
                    },
                )
            )
        cases.append(
            _case(
                f"indicators-{name}",
                "household.indicators",
                {
                    "records": records,
                    "village_code": DEFAULT_VILLAGE_CODE,
                    "year": DEFAULT_TODAY.year,
                    "monitoring": monitoring.to_mapping(),
                    "on": today,
                },
            )
        )
    # ID numbers as people type them: the cleaned record holds the standard form (docs/forms.md).
    roster = sample_household(1)["household_roster"]
    for name, spell in (("full-width", _full_width), ("lower-x", _lower_x)):
        typed = copy.deepcopy(roster)
        typed["members"][0]["id_number"] = spell(typed["members"][0]["id_number"])
        cases.append(
            _case(
                f"validate-id-{name}-household_roster",
                "record.validate",
                {
                    "form_id": "household_roster",
                    "form_version": load_builtin("household_roster").version,
                    "today": today,
                    "config": config,
                    "data": typed,
                },
            )
        )
    house = sample_household(1)["housing_safety"]
    broken = {
        "housing-missing-required": {k: v for k, v in house.items() if k != "appraisal_grade"},
        "housing-wrong-types": {**house, "build_year": "一九九八", "storeys": 1.5},
        "housing-unknown-choice": {**house, "appraisal_grade": "Z"},
        "housing-future-build-year": {**house, "build_year": 2099},
        "housing-c-grade-not-repaired": {**house, "appraisal_grade": "C"},
        "housing-not-an-object": [],
    }
    families = {f"housing-{name}": ("housing_safety", data) for name, data in broken.items()}
    families.update(_rule_family_records(sample_household(1)))
    for name, (form_id, data) in families.items():
        cases.append(
            _case(
                f"validate-{name}",
                "record.validate",
                {
                    "form_id": form_id,
                    "form_version": load_builtin(form_id).version,
                    "today": today,
                    "config": config,
                    "data": data,
                },
            )
        )
    return cases


def _child_id(birth: str, serial: str = "123") -> str:
    first17 = f"530102{birth.replace('-', '')}{serial}"
    return first17 + id_check_char(first17)


def _rule_family_records(household: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Records that exercise the rule families a second engine (the field app's JS) must get
    right beyond the samples: a calculation read by relevance, a hidden repeat, answers kept
    when relevance cannot be decided, row ids, coercions, hidden answers removed."""
    school_child = {"_id": "c1", "name": "小明", "id_number": _child_id("2014-03-05")}
    dropout = {
        "_id": "c2",
        "name": "小红",
        "id_number": _child_id("2012-10-01", "224"),
        "health": ["健康"],
        "dropout_reason": "学习困难/厌学",
        "persuasions": [
            {"_id": "p1", "visit_date": "2026-10-09", "visited_by": "村主任", "result": "劝返中"},
            {"visit_date": "2026-10-20", "visited_by": "校长", "result": "劝返中"},
            {"_id": "p1", "visit_date": "2099-01-01", "result": "劝返中"},
        ],
    }
    monitoring = household["monitoring_household"]
    roster = household["household_roster"]
    member = roster["members"][0]
    return {
        # age (a calculation placed after nothing it needs) decides relevance; schooling given,
        # so the persuasions repeat is hidden and its rows are dropped.
        "education-hidden-repeat": (
            "compulsory_education",
            {
                "survey_date": "2026-11-25",
                "children": [
                    {
                        **school_child,
                        "health": ["健康"],
                        "schooling": "初中",
                        "persuasions": [{"_id": "p9", "visited_by": "村主任"}],
                    }
                ],
            },
        ),
        # A dropout: the persuasion rows are validated, one without _id, one repeating an id.
        "education-repeat-rows": (
            "compulsory_education",
            {"survey_date": "2026-11-25", "children": [dropout]},
        ),
        # An ID number with a wrong check character: its own message, the age is unknown, so
        # the answers whose relevance reads it are kept and nothing is required of them.
        "education-unknown-age-keeps-answers": (
            "compulsory_education",
            {
                "survey_date": "2026-11-25",
                "children": [
                    {
                        **school_child,
                        "id_number": school_child["id_number"][:-1]
                        + ("0" if school_child["id_number"][-1] != "0" else "1"),
                        "health": "健康",
                        "schooling": "初中",
                    }
                ],
            },
        ),
        # Full-width digits, a select_multiple as text, numbers for text, an unknown key kept.
        "roster-coercions": (
            "household_roster",
            {
                **roster,
                # A number for a text field (within 2^53: JSON numbers beyond it are not exact in
                # JavaScript, and a tablet only ever sends typed text).
                "household_no": 120100001,
                "natural_village": 12.5,
                "phone": "15915000806",
                "handwritten_note": "户主外出",
                "members": [{**member, "work_months": "１２", "health": "健康 健康"}],
            },
        ),
        # Category 无: every answer of the monitoring steps is hidden and removed; the income
        # chain (net_income → per_capita_income) still computes, from a full-width amount.
        "monitoring-hidden-answers": (
            "monitoring_household",
            {**monitoring, "category": "无", "wage_income": "１２３４５．６"},
        ),
    }


# --- sealed messages: framing + envelope + compression + message, end to end -------------------


def _labelled(label: str) -> bytes:
    import hashlib

    return hashlib.sha256(f"village-sync conformance: {label}".encode()).digest()


def _stored_deflate(data: bytes) -> bytes:
    """deflate-raw of ``data`` as one stored block (RFC 1951 §3.2.4): the same bytes whatever
    zlib is installed, and any deflate-raw decoder (DecompressionStream) reads it."""
    assert len(data) < 65536
    return (
        b"\x01"
        + len(data).to_bytes(2, "little")
        + (len(data) ^ 0xFFFF).to_bytes(2, "little")
        + data
    )


def _sealed_cases(merged_state: dict[str, Any]) -> list[dict[str, Any]]:
    from sync_protocol.crypto import EncryptionPrivateKey, SigningPrivateKey
    from sync_protocol.envelope import seal
    from sync_protocol.messages import Hello, ServerReply, UploadBatch, encode_message

    envelope_doc = json.loads((VECTOR_DIR.parent / "envelope.json").read_text(encoding="utf-8"))
    device, server = envelope_doc["device"], envelope_doc["server"]

    def enc(party: dict[str, str]) -> EncryptionPrivateKey:
        return EncryptionPrivateKey.from_raw(bytes.fromhex(party["x25519_private_hex"]))

    def sig(party: dict[str, str]) -> SigningPrivateKey:
        return SigningPrivateKey.from_raw(bytes.fromhex(party["ed25519_private_seed_hex"]))

    hello = Hello.from_dict(
        {
            "device_id": device["sender_id"],
            "cursors": {"530102001201": 0},
            "high_water_mark": 0,
            "clock": "019ab697e800-0000-" + device["sender_id"],
            "capabilities": {"suites": [1], "compression": [0, 1], "dictionary_ids": []},
        }
    )
    creation = {**_creation(), "device_id": device["sender_id"]}
    creation["hlc"] = "019ab697e800-0001-" + device["sender_id"]
    batch = UploadBatch(1, (_op(creation),))
    common = {"sender_id": device["sender_id"], "sender_signing_key": sig(device)}
    frame0 = seal(
        _stored_deflate(encode_message(hello)),
        recipient_public=enc(server).public_key(),
        sequence=41,
        suite=1,
        compression=1,
        nonce=_labelled("hello nonce")[:12],
        ephemeral_private=EncryptionPrivateKey.from_raw(_labelled("hello ephemeral")),
        **common,
    )
    frame1 = seal(
        encode_message(batch),
        recipient_public=enc(server).public_key(),
        sequence=42,
        suite=2,
        nonce=_labelled("batch nonce")[:12],
        ephemeral_private=EncryptionPrivateKey.from_raw(_labelled("batch ephemeral")),
        **common,
    )
    body = b"".join(len(e).to_bytes(4, "big") + e for e in (frame0, frame1))
    reply = ServerReply.from_dict(
        {
            "server_time_ms": T0,
            "frames": [{"index": 0, "status": "committed"}, {"index": 1, "status": "committed"}],
            "acks": [
                {
                    "batch_seq": 1,
                    "acks": [{"seq": 1, "status": "applied", "revision": 1}],
                    "high_water_mark": 1,
                    "records": [merged_state],
                }
            ],
        }
    )
    reply_envelope = seal(
        _stored_deflate(encode_message(reply)),
        recipient_public=enc(device).public_key(),
        sender_id=server["sender_id"],
        sender_signing_key=sig(server),
        sequence=41,  # the hello's sequence: the reply answers that request
        suite=1,
        compression=1,
        nonce=_labelled("reply nonce")[:12],
        ephemeral_private=EncryptionPrivateKey.from_raw(_labelled("reply ephemeral")),
    )
    to_server = {
        "recipient_x25519_private_hex": server["x25519_private_hex"],
        "sender_id": device["sender_id"],
        "sender_ed25519_public_hex": device["ed25519_public_hex"],
    }
    to_device = {
        "recipient_x25519_private_hex": device["x25519_private_hex"],
        "sender_id": server["sender_id"],
        "sender_ed25519_public_hex": server["ed25519_public_hex"],
    }
    tampered = bytearray(reply_envelope)
    tampered[-70] ^= 0x01  # a ciphertext byte
    return [
        _case(
            "sealed-request-hello-and-batch", "sealed.open", {**to_server, "body_hex": body.hex()}
        ),
        _case("sealed-reply", "sealed.open", {**to_device, "envelope_hex": reply_envelope.hex()}),
        _case(
            "sealed-reply-tampered", "sealed.open", {**to_device, "envelope_hex": tampered.hex()}
        ),
    ]


# --- the expression language (contracts §2, docs/forms.md) -----------------------------------------

_EXPRESSIONS: list[tuple[str, str, Any]] = [
    # (case name, expression, current value ".")
    ("arith-precedence", "1 + 2 * 3 - 4 div 2", None),
    ("arith-decimal", "0.1 + 0.2", None),
    ("arith-slash-is-div", "7 / 2", None),
    ("arith-mod", "17 mod 5", None),
    ("arith-negative", "-3 + 1", None),
    ("div-by-zero", "1 div 0", None),
    ("compare-numbers", "${storeys} >= 2 and ${floor_area} < 100", None),
    ("compare-text", "${grade} = 'C' or ${grade} != \"D\"", None),
    ("compare-empty-is-false", "${missing} > 0", None),
    ("empty-equals-blank", "${missing} = ''", None),
    ("blank-text-equals-blank", "${blank} = ''", None),
    ("not", "not(${flag})", None),
    ("true-false", "true() and not(false())", None),
    ("current-value", ". >= 1900 and . <= year(today())", 1998),
    ("current-value-future", ". >= 1900 and . <= year(today())", 2099),
    ("selected", "selected(${aid}, '低保') and not(selected(${aid}, '特困'))", None),
    ("count-selected", "count-selected(${aid})", None),
    ("count-rows", "count(${members})", None),
    ("count-if", "count-if(${members}, ${age} < 18)", None),
    ("sum-rows", "sum(${members}, ${income})", None),
    ("any-all", "any(${members}, ${age} > 60) and all(${members}, ${age} > 0)", None),
    ("if", "if(${storeys} > 1, 'multi', 'single')", None),
    ("coalesce", "coalesce(${missing}, 'fallback')", None),
    ("string-length", "string-length(${name})", None),
    ("regex", "regex(${phone}, '^1[3-9][0-9]{9}$')", None),
    ("regex-no", "regex(${name}, '^[0-9]+$')", None),
    ("today", "today()", None),
    ("date-year", "year(date('2019-09-01'))", None),
    ("date-compare", "date('2026-01-02') > date('2025-12-31')", None),
    ("bad-date", "date('2026-02-30')", None),
    ("age-at", "age-at(${id_number}, date('2026-11-25'))", None),
    ("age-at-bad-checksum", "age-at('110101200001011234', today())", None),
    ("school-age-date", "school-age-date(date('2027-03-01'))", None),
    ("number-string", "number('12.5') + 1 = 13.5 and string(12) = '12'", None),
    ("round", "round(2.345, 2)", None),
    ("min-max", "min(3, 1, 2) + max(3, 1, 2)", None),
    ("config", "config('monitoring_line')", None),
    ("config-per-capita", "${income_total} div ${size} < config('monitoring_line')", None),
    ("type-mismatch", "'a' + 1", None),
    ("syntax-unexpected-end", "1 +", None),
    ("syntax-unknown-function", "eval('1')", None),
    ("syntax-unterminated", "'abc", None),
    ("syntax-bad-reference", "${1abc} = 1", None),
    ("syntax-arity", "if(1, 2)", None),
    ("syntax-empty", "", None),
    # Every function at least once, and the refusals a second implementation must match.
    ("boolean", "boolean('') or boolean(${aid})", None),
    ("now-midnight-of-today", "now()", None),
    ("decimal-date-time-date", "decimal-date-time(date('1970-01-11'))", None),
    ("decimal-date-time-zone", "decimal-date-time('2026-11-25T08:30:00+08:00')", None),
    ("decimal-date-time-bad", "decimal-date-time('2026-11-25T25:00')", None),
    ("once-keeps-current", "once(${storeys} * 10)", 7),
    ("once-computes-when-empty", "once(${storeys} * 10)", None),
    ("month-day", "month(date('2026-03-09')) * 100 + day(date('2026-03-09'))", None),
    ("days-between", "days-between('2026-01-01', date('2026-03-01'))", None),
    ("date-arithmetic", "date('2026-02-27') + 3", None),
    ("date-difference", "date('2026-03-01') - date('2025-03-01')", None),
    ("id-parts", "concat(id-sex(${id_number}), ' ', id-kind(${id_number}))", None),
    ("id-birth-date", "id-birth-date(${id_number})", None),
    ("id-disability-card", "id-kind('53010219800101002312')", None),
    ("int-truncates", "int(-2.7) + int('9.9')", None),
    ("number-not-a-number", "number('abc')", None),
    ("concat-list-and-number", "concat(${aid}, '/', 2.5, '/', true())", None),
    ("contains-starts-with", "contains(${name}, '秀') and starts-with(${phone}, '138')", None),
    ("round-half-away-from-zero", "round(-2.5) + round(1234.5, -2)", None),
    ("decimal-division", "1 div 3", None),
    ("decimal-mod-sign", "-7.5 mod 2", None),
    ("number-text-compare", "${grade} != 3 and '3' = 3 and '10' > 9", None),
    ("boolean-number-compare", "true() = 1", None),
    ("min-max-dates", "max('2026-01-05', date('2025-12-31'))", None),
    ("list-equality", "${aid} = ${aid}", None),
    ("sum-empty-rows", "sum(${missing}, ${income}) + count-if(${missing}, true())", None),
    ("nested-row-value", "sum(${members}, if(${age} > ${size} * 10, ${income}, 0))", None),
    ("type-minus-text", "-'a'", None),
    ("type-compare-list", "${aid} < 3", None),
    ("date-plus-date", "today() + today()", None),
    ("round-bad-digits", "round(1.5, 0.5)", None),
    ("syntax-too-deep", "(" * 41 + "1" + ")" * 41, None),
    ("syntax-too-tall", "1" + "+1" * 130, None),
    ("syntax-too-long", "1" + " " * 4000, None),
    ("syntax-bad-number", "1" * 31, None),
    ("syntax-unexpected-character", "1 # 2", None),
    ("syntax-unexpected-token", "1 2", None),
    ("syntax-bare-word", "storeys > 1", None),
    ("syntax-regex-not-literal", "regex(${name}, ${name})", None),
    ("syntax-bad-regex", "regex(${name}, '(')", None),
    ("syntax-row-function-needs-repeat", "sum(1, 2)", None),
    ("syntax-dollar", "$storeys", None),
]

_EXPRESSION_VALUES: dict[str, Any] = {
    "storeys": 2,
    "floor_area": 93.5,
    "grade": "C",
    "blank": "",
    "flag": False,
    "aid": ["低保", "残补"],
    "name": "李秀英",
    "phone": "13888001234",
    "id_number": "530102198001010023",
    "income_total": 30000,
    "size": 4,
    "members": [
        {"_id": "r1", "age": 45, "income": 20000.5},
        {"_id": "r2", "age": 12, "income": 0},
        {"_id": "r3", "age": 70, "income": 9999.5},
    ],
}


def _expression_cases() -> list[dict[str, Any]]:
    _, config = _context_config()
    today = DEFAULT_TODAY.isoformat()
    cases = [
        _case(
            f"expression-{name}",
            "expression.evaluate",
            {
                "expression": text,
                "values": _EXPRESSION_VALUES,
                "current": current,
                "today": today,
                "config": config,
            },
        )
        for name, text, current in _EXPRESSIONS
    ]
    # Every expression of the built-in instruments on a sample household's record: top-level
    # fields once, fields of a repeat once in its first row ("rows" scopes ${name} to the row
    # first; "level_names" are the names each level defines, as validation passes them).
    records = sample_household(2)
    for form_id, data in records.items():
        defn = load_builtin(form_id)
        levels = {"": sorted(f.name for f in defn.fields)}
        levels.update(
            {f.name: sorted(c.name for c in f.fields) for f in defn.fields if f.type == "repeat"}
        )
        for fld in defn.fields:
            if fld.type == "repeat":
                rows = data.get(fld.name) or []
                scoped = [(sub, rows[0]) for sub in fld.fields] if rows else []
            else:
                scoped = [(fld, None)]
            for target, row in scoped:
                where = data if row is None else row
                for role in ("relevant", "constraint", "calculate", "required"):
                    text = getattr(target, role)
                    if not isinstance(text, str) or not text:
                        continue
                    name = target.name if row is None else f"{fld.name}-{target.name}"
                    cases.append(
                        _case(
                            f"instrument-{form_id}-{name}-{role}",
                            "expression.evaluate",
                            {
                                "expression": text,
                                "values": data,
                                "rows": [] if row is None else [{"repeat": fld.name, "row": row}],
                                "level_names": levels,
                                "current": where.get(target.name) if role == "constraint" else None,
                                "today": today,
                                "config": config,
                            },
                        )
                    )
    # choice(): the column of the choice a choice_filter tests (input "choice": its value as
    # "name" and its filter columns).
    tested = {"name": "t1", "county": "C"}
    for name, text, choice in (
        ("choice-column", "choice('county') = ${grade}", tested),
        ("choice-name", "choice('name')", tested),
        ("choice-missing-column", "choice('region')", tested),
        ("choice-outside-a-filter", "choice('county')", None),
    ):
        cases.append(
            _case(
                f"expression-{name}",
                "expression.evaluate",
                {
                    "expression": text,
                    "values": _EXPRESSION_VALUES,
                    "current": None,
                    "choice": choice,
                    "today": today,
                    "config": config,
                },
            )
        )
    # position(), indexed-repeat(), jr:choice-name() (input "labels": field → value → label).
    members = _EXPRESSION_VALUES["members"]
    for name, text, rows, labels in (
        ("position-in-a-row", "position()", [{"repeat": "members", "row": members[1]}], None),
        ("position-outside-a-repeat", "position()", [], None),
        ("indexed-repeat", "indexed-repeat(${age}, ${members}, 2)", [], None),
        ("indexed-repeat-no-such-row", "indexed-repeat(${age}, ${members}, 9)", [], None),
        ("indexed-repeat-not-whole", "indexed-repeat(${age}, ${members}, 1.5)", [], None),
        (
            "jr-choice-name",
            "jr:choice-name(${grade}, '${grade}')",
            [],
            {"grade": {"C": "C级", "D": "D级"}},
        ),
        (
            "jr-choice-name-unknown-value",
            "jr:choice-name('Z', '${grade}')",
            [],
            {"grade": {"C": "C级"}},
        ),
    ):
        cases.append(
            _case(
                f"expression-{name}",
                "expression.evaluate",
                {
                    "expression": text,
                    "values": _EXPRESSION_VALUES,
                    "rows": rows,
                    "current": None,
                    "labels": labels,
                    "today": today,
                    "config": config,
                },
            )
        )
    prices = {"prices": [{"crop": "rice", "yuan": "3.2"}, {"crop": "corn", "unit": "公斤"}]}
    for name, text in (
        ("pulldata-number", "pulldata('prices', 'yuan', 'crop', 'rice')"),
        ("pulldata-text", "pulldata('prices', 'unit', 'crop', 'corn')"),
        ("pulldata-empty-cell", "pulldata('prices', 'yuan', 'crop', 'corn')"),
        ("pulldata-no-row", "pulldata('prices', 'yuan', 'crop', 'wheat')"),
        ("pulldata-no-table", "pulldata('rates', 'yuan', 'crop', 'rice')"),
        ("pulldata-table-not-literal", "pulldata(${grade}, 'yuan', 'crop', 'rice')"),
    ):
        cases.append(
            _case(
                f"expression-{name}",
                "expression.evaluate",
                {
                    "expression": text,
                    "values": _EXPRESSION_VALUES,
                    "current": None,
                    "tables": prices,
                    "today": today,
                    "config": config,
                },
            )
        )
    return cases


#: A form of its own for what the built-in instruments do not use: a cascading select
#: (choice_filter over the choices' filter columns), a computed repeat_count, defaults.
_FEATURE_FORM: dict[str, Any] = {
    "id": "features",
    "version": 1,
    "title": "功能",
    "fields": [
        {"name": "county", "type": "select_one", "label": "县", "choices": "county"},
        {
            "name": "town",
            "type": "select_one",
            "label": "乡",
            "choices": "town",
            "choice_filter": "choice('county') = ${county}",
        },
        {
            "name": "crops",
            "type": "select_multiple",
            "label": "作物",
            "choices": "crop",
            "choice_filter": "selected(${county}, choice('region')) and choice('name') != 'none'",
        },
        {"name": "size", "type": "integer", "label": "人数", "default": "2"},
        {"name": "visited", "type": "date", "label": "日期", "default": "today()"},
        {"name": "adults", "type": "integer", "label": "成人", "default": "${size} - 1"},
        {
            "name": "members",
            "type": "repeat",
            "label": "成员",
            "repeat_count": "${size}",
            "fields": [
                {"name": "mname", "type": "text", "label": "姓名", "default": "'未填'"},
                {"name": "row_no", "type": "calculate", "calculate": "position()"},
            ],
        },
        {
            "name": "county_name",
            "type": "calculate",
            "calculate": "jr:choice-name(${county}, '${county}')",
        },
        {
            "name": "first_member",
            "type": "calculate",
            "calculate": "indexed-repeat(${mname}, ${members}, 1)",
        },
    ],
    "choice_lists": {
        "county": [{"value": "c1", "label": "一县"}, {"value": "c2", "label": "二县"}],
        "town": [
            {"value": "t1", "label": "一乡", "filters": {"county": "c1"}},
            {"value": "t2", "label": "二乡", "filters": {"county": "c2"}},
        ],
        "crop": [
            {"value": "rice", "label": "稻", "filters": {"region": "c1"}},
            {"value": "corn", "label": "玉米", "filters": {"region": "c2"}},
            {"value": "none", "label": "无", "filters": {"region": "c1"}},
        ],
    },
}


def _feature_cases() -> list[dict[str, Any]]:
    _, config = _context_config()
    today = DEFAULT_TODAY.isoformat()
    two = [{"_id": "r1", "mname": "甲"}, {"_id": "r2", "mname": "乙"}]
    records = {
        "ok": {"county": "c1", "town": "t1", "crops": ["rice"], "size": 2, "members": two},
        "filtered-out": {
            "county": "c1",
            "town": "t2",
            "crops": "rice corn none",
            "size": 2,
            "members": two,
        },
        "no-county-no-town": {"town": "t1", "size": 2, "members": two},
        "rows-not-repeat-count": {"county": "c2", "size": 3, "members": two},
        "repeat-count-undetermined": {"size": "many", "members": two},
    }
    cases = [
        _case(
            f"validate-features-{name}",
            "record.validate",
            {
                "definition": _FEATURE_FORM,
                "form_id": "features",
                "form_version": 1,
                "today": today,
                "config": config,
                "data": data,
            },
        )
        for name, data in records.items()
    ]
    for name, data in (
        ("new-record", {"members": [{"_id": "r1"}]}),
        ("typed-values-stay", {"size": 5, "members": [{"_id": "r1", "mname": "甲"}]}),
    ):
        cases.append(
            _case(
                f"prefill-features-{name}",
                "record.prefill",
                {"definition": _FEATURE_FORM, "today": today, "config": config, "data": data},
            )
        )
    return cases


def build_all() -> dict[str, dict[str, Any]]:
    """Every vector document, by file name."""
    merge_cases = _merge_cases()
    merged_state = next(c for c in merge_cases if c["id"] == "merge-2-review-conflict")["expect"][
        "state"
    ]
    return {
        "messages.json": _doc(
            "Hello, UploadBatch, ServerReply (FrameStatus, Ack, OpAck, DownloadPage, Refusal) "
            "payloads: decoded and re-encoded canonically, or refused naming the field "
            "(protocol.md §5)",
            _message_cases(merged_state) + _state_cases(merged_state),
        ),
        "framing.json": _doc(
            "request body framing (protocol.md §2); whole sealed requests and replies opened to "
            "their messages with the fixed keys of envelope.json (deflate-raw as a stored block)",
            _framing_cases() + _sealed_cases(merged_state),
        ),
        "clock.json": _doc(
            "HLC stamps, the clock, suspect stamps (protocol-merge.md §1)", _clock_cases()
        ),
        "merge.json": _doc(
            "field-level merge, the worked examples of protocol-merge.md §9 with full stamps; "
            "device_view, base_for, delete_base, resolution (§10)",
            merge_cases,
        ),
        "records.json": _doc(
            "field paths (contracts §4), the expression language (contracts §2: every operator and "
            "function, refusals with code and position, every top-level expression of the "
            "built-in instruments on a sample household), record validation and household "
            "indicators of the built-in instruments (forms/instruments/*.json); a form of its own "
            "for choice_filter, a computed repeat_count and defaults (record.prefill), evaluated on "
            f"{DEFAULT_TODAY.isoformat()}",
            _path_cases() + _expression_cases() + _record_cases() + _feature_cases(),
        ),
    }


def write_all(directory: Path = VECTOR_DIR) -> list[Path]:
    """Write every document as pretty, key-sorted UTF-8 JSON; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in build_all().items():
        path = directory / name
        path.write_text(render(doc), encoding="utf-8")
        written.append(path)
    return written


def render(doc: dict[str, Any]) -> str:
    """The committed text of one document."""
    return json.dumps(doc, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    for written in write_all():
        print(written)
    _ = date  # dates are ISO text in the vectors
