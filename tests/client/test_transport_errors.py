"""The device reads the server's error body from servers of either age."""

from __future__ import annotations

import json

import pytest

from village_client_stub.transport import HttpResponse, error_message


def _response(status: int, body: object) -> HttpResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    return HttpResponse(status=status, headers={"content-type": "application/json"}, body=raw)


def test_the_current_bilingual_object_is_read() -> None:
    error = _response(
        401,
        {
            "error": {
                "code": "invalid_enrollment_code",
                "message": {"zh": "注册码无效", "en": "unknown enrollment code"},
                "details": {"why": 1},
            }
        },
    ).error()
    assert (error.status, error.server_code) == (401, "invalid_enrollment_code")
    assert error.message_zh == "注册码无效"
    assert error.message.startswith("unknown enrollment code")
    assert error.details == {"why": 1}


def test_the_first_release_string_is_still_read() -> None:
    error = _response(
        409,
        {
            "error": {
                "code": "enrollment_code_used",
                "message": "该注册码已被使用 / this enrollment code has already been used",
                "details": {},
            }
        },
    ).error()
    assert error.server_code == "enrollment_code_used"
    assert error.message_zh == "该注册码已被使用"
    assert error.message.startswith("this enrollment code has already been used")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"zh": "只有中文"}, ("只有中文", "只有中文")),
        ({"en": "English only"}, (None, "English only")),
        ("plain words", (None, "plain words")),
        (None, (None, "HTTP 500")),
        ({"zh": 3, "en": ["x"]}, (None, "HTTP 500")),
        (42, (None, "HTTP 500")),
    ],
)
def test_partial_or_odd_messages_fall_back(message: object, expected: tuple) -> None:
    assert error_message(message, "HTTP 500") == expected


def test_a_body_that_is_not_the_error_shape_still_gives_an_error() -> None:
    error = _response(502, b"<html>bad gateway</html>").error()
    assert (error.status, error.server_code) == (502, "http_502")
