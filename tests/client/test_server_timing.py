"""The device reads the server's own time on an exchange from its ``Server-Timing`` header."""

from __future__ import annotations

import pytest

from village_client_stub.transport import HttpResponse, server_timing_s


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("app;dur=12.5", 0.0125),
        ('db;dur=3, app;desc="sync";dur=250', 0.25),
        ('app;dur="40"', 0.04),
        ("app", None),
        ("db;dur=3", None),
        ("app;dur=abc", None),
        ("app;dur=-5", None),
        ("", None),
    ],
)
def test_the_app_metric_is_read_and_anything_else_is_none(
    value: str, expected: float | None
) -> None:
    assert server_timing_s(value) == expected


def test_a_response_without_the_header_has_no_server_time() -> None:
    assert HttpResponse(200, {}, b"").server_s is None
    assert HttpResponse(200, {"server-timing": "app;dur=1000"}, b"").server_s == 1.0
