"""The conformance vectors: committed files up to date, the Python engines pass them, and the
runner catches an implementation that answers wrongly (docs/protocol.md §11)."""

from __future__ import annotations

import sys

import pytest

from tests.sync_protocol.conformance import (
    VECTOR_DIR,
    load_cases,
    main,
    process_implementation,
    python_implementation,
    run_cases,
)
from tests.sync_protocol.conformance_builder import build_all, render
from tests.sync_protocol.conformance_python import CHECKS


@pytest.mark.parametrize("name", sorted(build_all()))
def test_committed_vectors_are_what_the_engines_produce(name: str) -> None:
    committed = (VECTOR_DIR / name).read_text(encoding="utf-8")
    assert committed == render(build_all()[name]), (
        f"{name} is stale: run .venv/bin/python -m tests.sync_protocol.conformance_builder"
    )


def test_every_check_has_cases_and_every_case_a_known_check() -> None:
    cases = load_cases()
    assert {c["check"] for c in cases} == set(CHECKS)
    assert len({c["id"] for c in cases}) == len(cases)


def test_the_python_engines_pass_every_vector() -> None:
    outcome = run_cases(load_cases(), python_implementation)
    assert outcome.failed == [] and outcome.skipped == []


def test_a_process_speaking_the_line_protocol_is_checked_case_by_case() -> None:
    command = f"{sys.executable} -m tests.sync_protocol.conformance_python"
    outcome = run_cases(load_cases(only="merge."), process_implementation(command))
    assert outcome.ok and len(outcome.passed) > 10


def test_the_runner_reports_wrong_and_unsupported_answers() -> None:
    cases = load_cases(only="stamp.parse")

    def wrong(requests):  # type: ignore[no-untyped-def]
        for i, request in enumerate(requests):
            if i == 0:
                yield {"unsupported": True}
            else:
                answer = python_implementation([request])
                got = next(answer)
                yield {**got, "ms": got.get("ms", 0) + 1} if "ms" in got else {"error": {}}

    outcome = run_cases(cases, wrong)
    assert outcome.skipped == [cases[0]["id"]]
    assert outcome.passed == []
    assert len(outcome.failed) == len(cases) - 1


def test_the_command_line_exits_non_zero_on_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--only", "clock."]) == 0
    assert "0 failed" in capsys.readouterr().out
    assert main(["--only", "clock.", "--impl", f"{sys.executable} -c print('{{}}')"]) == 1
    assert "FAIL clock-" in capsys.readouterr().out


def test_numbers_compare_by_value_and_booleans_are_not_numbers() -> None:
    from tests.sync_protocol.conformance import _same

    assert _same({"a": [1, 2.5]}, {"a": [1.0, 2.5]})
    assert not _same({"a": True}, {"a": 1})
    assert not _same({"a": 1}, {"a": 1, "b": None})
