"""The protocol documents agree with the code and the vectors where they give numbers and ids.

docs/ is the specification a second implementation is written from (issue 13): a constant or a
worked example that drifted from the engines would send it into trial and error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sync_protocol.messages import CLOCK_SKEW_LIMIT_MS, PROTOCOL_VERSION, REFUSAL_CODES
from tests.sync_protocol.conformance import load_cases

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
MERGE = (ROOT / "docs" / "protocol-merge.md").read_text(encoding="utf-8")
STAMP = re.compile(r"[0-9a-f]{12}-[0-9a-f]{4}-[!-~]+?(?=[`\"])")


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end != -1 else len(text)]


def test_the_clock_skew_limit_and_version_are_the_documented_ones() -> None:
    assert f"{CLOCK_SKEW_LIMIT_MS:,}" in PROTOCOL
    assert CLOCK_SKEW_LIMIT_MS == 730 * 24 * 3600 * 1000
    assert f"`messages.PROTOCOL_VERSION = {PROTOCOL_VERSION}`" in PROTOCOL


def test_every_refusal_code_is_in_the_refusal_table() -> None:
    table = _section(PROTOCOL, "**Refusal**")
    for code in REFUSAL_CODES:
        assert f"| `{code}` |" in table


def test_the_reply_sender_id_is_the_servers() -> None:
    from server.services.sync import SERVER_SENDER_ID

    assert f"**sender id is `{SERVER_SENDER_ID}`**" in PROTOCOL


def test_worked_examples_use_full_stamps_and_the_ids_the_engine_computes() -> None:
    examples = _section(MERGE, "## 9. Worked examples")
    assert "…d260" not in examples and "…5d30" not in examples and "c-d150…" not in examples
    merge_cases = [c for c in load_cases(only="merge") if c["check"] == "merge.run"]
    produced = json.dumps([c["expect"] for c in merge_cases])
    ids = set(re.findall(r"c-[0-9a-f]{32}", examples))
    assert len(ids) == 4
    for conflict_id in ids:
        assert conflict_id in produced, conflict_id
    inputs = json.dumps([c["input"] for c in merge_cases], ensure_ascii=False)
    for stamp in set(STAMP.findall(examples)):
        assert stamp in inputs, stamp
    named = set(re.findall(r"`(merge-[a-z0-9-]+|resolution-[a-z0-9-]+)`", examples))
    known = {c["id"] for c in load_cases()}
    assert named and named <= known, named - known
