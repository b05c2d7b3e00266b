"""Run the conformance vectors against an implementation (docs/protocol.md §11).

An implementation is any program that reads one JSON object per line on stdin —
``{"id": ..., "check": NAME, "input": {...}}`` — and writes one JSON object per line on stdout,
its answer, in the same order. An answer passes when it equals the case's ``expect`` as JSON
(object key order and number spelling do not matter; ``1`` and ``1.0`` are equal). A check the
implementation does not support may be answered ``{"unsupported": true}``: it is counted as
skipped, not passed.

    .venv/bin/python -m tests.sync_protocol.conformance                  # the Python engines
    .venv/bin/python -m tests.sync_protocol.conformance --impl "node conformance.js"
    .venv/bin/python -m tests.sync_protocol.conformance --only merge. --impl "…"

Exit status 0 when every supported case passes, 1 otherwise (each failure is printed with the
case id, the expected and the actual answer).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "VECTOR_DIR",
    "Outcome",
    "load_cases",
    "main",
    "process_implementation",
    "python_implementation",
    "run_cases",
]

VECTOR_DIR = Path(__file__).resolve().parents[2] / "sync_protocol" / "vectors" / "conformance"

Implementation = Callable[[Iterable[dict[str, Any]]], Iterator[dict[str, Any]]]


def load_cases(directory: Path = VECTOR_DIR, only: str = "") -> list[dict[str, Any]]:
    """Every case of every vector file (file order, then case order), optionally only the checks
    or case ids starting with ``only``; each case gains ``file``."""
    cases = []
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("format") != "village-sync-conformance" or doc.get("version") != 1:
            raise ValueError(f"{path}: not a version 1 conformance document")
        for case in doc["cases"]:
            if case["check"].startswith(only) or case["id"].startswith(only):
                cases.append({**case, "file": path.name})
    return cases


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            _same(expected[k], actual[k]) for k in expected
        )
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(
            _same(e, a) for e, a in zip(expected, actual, strict=True)
        )
    return type(expected) is type(actual) and expected == actual


@dataclass
class Outcome:
    """What a run found: passed and skipped case ids, failures with both answers."""

    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def run_cases(cases: list[dict[str, Any]], implementation: Implementation) -> Outcome:
    """Feed ``cases`` to ``implementation`` and compare every answer with ``expect``."""
    outcome = Outcome()
    requests = ({"id": c["id"], "check": c["check"], "input": c["input"]} for c in cases)
    answers = implementation(requests)
    for case in cases:
        actual = next(answers, None)
        if isinstance(actual, dict) and actual.get("unsupported") is True:
            outcome.skipped.append(case["id"])
        elif _same(case["expect"], actual):
            outcome.passed.append(case["id"])
        else:
            outcome.failed.append((case["id"], case["expect"], actual))
    close = getattr(answers, "close", None)
    if close is not None:
        close()  # let a process implementation end now, not when garbage collected
    return outcome


def python_implementation(requests: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The project's own engines, in process."""
    from tests.sync_protocol.conformance_python import answer

    for request in requests:
        yield answer(request["check"], request["input"])


def process_implementation(command: str) -> Implementation:
    """An implementation run as ``command``, speaking the line protocol (one case at a time)."""

    def run(requests: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        child = subprocess.Popen(
            shlex.split(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        assert child.stdin is not None and child.stdout is not None
        gone = False
        try:
            for request in requests:
                line = ""
                if not gone:
                    try:
                        child.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
                        child.stdin.flush()
                        line = child.stdout.readline()
                    except BrokenPipeError:
                        gone = True  # the implementation exited: every later case fails
                if not line:
                    yield {"no_answer": "the implementation closed its output"}
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    yield {"not_json": line[:200]}
        finally:
            for stream in (child.stdin, child.stdout):
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
            child.wait(timeout=30)

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", help="command of the implementation (default: the Python one)")
    parser.add_argument("--only", default="", help="only checks or case ids with this prefix")
    parser.add_argument("--vectors", type=Path, default=VECTOR_DIR)
    args = parser.parse_args(argv)
    cases = load_cases(args.vectors, args.only)
    implementation = process_implementation(args.impl) if args.impl else python_implementation
    outcome = run_cases(cases, implementation)
    for case_id, expected, actual in outcome.failed:
        print(f"FAIL {case_id}")
        print(f"  expected: {json.dumps(expected, ensure_ascii=False, sort_keys=True)[:2000]}")
        print(f"  actual:   {json.dumps(actual, ensure_ascii=False, sort_keys=True)[:2000]}")
    print(
        f"{len(outcome.passed)} passed, {len(outcome.failed)} failed, "
        f"{len(outcome.skipped)} unsupported, of {len(cases)} cases"
    )
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
