"""schemathesis against the served OpenAPI document (the "schemathesis" proof of issue 16):
every documented operation gets generated requests, as the county admin, on SQLite and
PostgreSQL; no answer may be a 5xx and every answer must conform to the document (status code,
content type, body schema, headers). The document's request schemas carry the validators'
lengths, ranges, patterns and choices and refuse unknown fields, as the server does.

``VILLAGE_SYNC_TEST_FUZZ_EXAMPLES`` sets the examples per operation (default 5 in CI).
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from server.api import API_PREFIX

# "Schema-valid data is accepted" is left out: the wire formats (sync frames, upload offsets,
# base64 keys, NUL-free names) refuse more than a JSON schema can say. Every other check runs:
# no 5xx, status codes, content types, headers and bodies as documented.

EXAMPLES = int(os.environ.get("VILLAGE_SYNC_TEST_FUZZ_EXAMPLES", "5"))


def _fuzz(operation: Any, headers: dict[str, str]) -> int:
    """Run ``EXAMPLES`` generated cases against ``operation``; returns how many ran.

    Raises the first failing check (schemathesis names the check and the request).
    """
    calls = [0]

    @given(operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: Any) -> None:
        calls[0] += 1
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    check()
    return calls[0]


def test_every_operation_conforms_and_never_answers_5xx(
    app: Flask, admin_headers: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_wsgi(f"{API_PREFIX}/openapi.json", app)
    operations = cases = 0
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        try:
            cases += _fuzz(operation, admin_headers)
        except (Exception, BaseExceptionGroup) as exc:  # every operation tried, all reported
            failures[operation.label] = str(exc)[:2000]
    print(f"schemathesis: {operations} operations, {cases} cases, {len(failures)} failing")
    for label, text in failures.items():
        print(f"--- {label}\n{text}")
    assert operations > 20
    assert failures == {}
