"""One error body for every error: our classes, Flask's own 404/405/500, 413 and a busy DB."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest
from flask import Flask

from server.errors import (
    ERROR_CLASSES,
    ERROR_CODES,
    ApiError,
    ErrorCode,
    RateLimited,
    ServiceBusy,
    StorageFull,
    Unauthorized,
    register_code,
)
from tests.server.conftest import assert_error


@pytest.fixture
def sqlite_app(sqlite_url: str, app_on) -> Flask:
    app = app_on(sqlite_url)

    @app.get("/raise/<name>")
    def _raise(name: str):
        cls = next(c for c in ERROR_CLASSES if c.__name__ == name)
        if cls in (RateLimited, ServiceBusy, StorageFull):
            raise cls(retry_after=7, details={"why": "test"})
        raise cls(details={"why": "test"})

    @app.get("/crash")
    def _crash():
        raise RuntimeError("a bug")

    return app


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_leaves_in_the_one_shape(sqlite_app: Flask, cls: type[ApiError]):
    response = sqlite_app.test_client().get(f"/raise/{cls.__name__}")
    error = assert_error(response, cls.status, cls.default_code)
    assert error["details"]["why"] == "test"
    assert error["message"] == {"zh": cls.default_zh, "en": cls.default_en}
    if cls in (RateLimited, ServiceBusy, StorageFull):
        assert response.headers["Retry-After"] == "7"
        assert error["details"]["retry_after"] == 7
    if cls is Unauthorized:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_status_codes_and_codes_are_unique() -> None:
    assert len({c.status for c in ERROR_CLASSES}) == len(ERROR_CLASSES)
    assert len({c.default_code for c in ERROR_CLASSES}) == len(ERROR_CLASSES)
    assert {400, 401, 403, 404, 409, 410, 413, 422, 429, 503} <= {c.status for c in ERROR_CLASSES}


def test_flask_404_405_and_500_use_the_shape(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    assert_error(client.get("/api/v1/no-such-thing"), 404, "not_found")
    assert_error(client.get("/api/v1/auth/login"), 405, "method_not_allowed")
    error = assert_error(client.get("/crash"), 500, "internal_error")
    assert "a bug" not in str(error)


def test_oversized_body_is_413(sqlite_url: str, app_on) -> None:
    app = app_on(sqlite_url, MAX_REQUEST_BYTES=1000)
    response = app.test_client().post("/api/v1/auth/login", data=b"x" * 5000)
    assert_error(response, 413, "payload_too_large")


def test_malformed_body_is_400_with_field_messages(sqlite_app: Flask) -> None:
    client = sqlite_app.test_client()
    error = assert_error(
        client.post("/api/v1/auth/login", json={"username": ""}), 400, "validation_failed"
    )
    assert set(error["details"]["fields"]) == {"username", "password"}
    error = assert_error(
        client.post("/api/v1/auth/login", data="not json"), 400, "validation_failed"
    )
    assert "_body" in error["details"]["fields"]


def test_locked_sqlite_database_answers_503_with_retry_after(sqlite_url: str, app_on):
    app = app_on(sqlite_url, SQLITE_BUSY_TIMEOUT_MS=50, BUSY_RETRY_AFTER_SECONDS=3)
    from tests.server.conftest import add_user, login

    add_user(app, "admin")
    client = app.test_client()
    headers = login(client, "admin")
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        response = client.post(
            "/api/v1/enrollment-codes", json={"scope": "530102001201"}, headers=headers
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert_error(response, 503, "database_busy")
    assert response.headers["Retry-After"] == "3"
    # Once the lock is gone the same request succeeds.
    again = client.post("/api/v1/enrollment-codes", json={"scope": "530102001201"}, headers=headers)
    assert again.status_code == 201


def test_a_full_sqlite_database_answers_507_with_retry_after(
    sqlite_url: str, app_on, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leak 11: SQLite's "database or disk is full" (fault-injected) is 507, not a 500."""
    from sqlalchemy.exc import OperationalError

    from server.services import enrollment
    from tests.server.conftest import add_user, login

    app = app_on(sqlite_url)
    add_user(app, "admin")
    client = app.test_client()
    headers = login(client, "admin")

    def full(*args, **kwargs):
        raise OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(enrollment.enrollment, "add_code", full)
    response = client.post(
        "/api/v1/enrollment-codes", json={"scope": "530102001201"}, headers=headers
    )
    assert_error(response, 507, "storage_full")
    assert int(response.headers["Retry-After"]) > 0


SERVER = Path(__file__).resolve().parents[2] / "server"


def _raised_codes() -> list[tuple[str, str, str, int]]:
    """``(code, class name, file, line)`` of every ``Cls(..., code="...")`` in server/."""
    found = []
    for path in sorted(SERVER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            for keyword in node.keywords:
                value = keyword.value
                if keyword.arg == "code" and isinstance(value, ast.Constant) and value.value:
                    found.append((value.value, node.func.id, path.name, node.lineno))
    return found


def test_every_code_a_service_raises_is_registered_with_its_class_status() -> None:
    by_name = {cls.__name__: cls for cls in ERROR_CLASSES}
    raised = [item for item in _raised_codes() if item[1] in by_name]
    assert len(raised) > 40  # the walk sees the services' raise sites
    for code, name, file, line in raised:
        assert code in ERROR_CODES, f"{file}:{line} raises unregistered {code!r}"
        assert ERROR_CODES[code].status == by_name[name].status, (code, name, file, line)


def test_every_protocol_code_is_registered() -> None:
    from sync_protocol.errors import ProtocolError

    def walk(cls: type) -> list[type]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in walk(child))]

    import sync_protocol.conflicts
    import sync_protocol.exchange
    import sync_protocol.merge
    import sync_protocol.messages  # noqa: F401

    # The device engine's own errors (sync_protocol.device*) are raised on the tablet only;
    # the server never answers with them.
    codes = {
        cls.code
        for cls in walk(ProtocolError)
        if cls.__module__.startswith("sync_protocol")
        and not cls.__module__.startswith("sync_protocol.device")
    }
    assert len(codes) > 20
    assert codes <= set(ERROR_CODES), sorted(codes - set(ERROR_CODES))


def test_every_registered_code_is_in_the_openapi_document(sqlite_app: Flask) -> None:
    document = sqlite_app.test_client().get("/api/v1/openapi.json").get_json()
    error = document["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["properties"]["code"]["enum"] == sorted(ERROR_CODES)
    listed = {entry["code"]: entry for entry in error["x-error-codes"]}
    assert set(listed) == set(ERROR_CODES)
    for code, entry in ERROR_CODES.items():
        assert listed[code] == {
            "code": code,
            "status": entry.status,
            "message": {"zh": entry.zh, "en": entry.en},
        }
        assert entry.zh and entry.en and 400 <= entry.status < 600


def test_a_registered_code_lends_its_default_message() -> None:
    from server.errors import NotFound

    error = NotFound(code="record_not_found")
    assert error.message == {
        "zh": ERROR_CODES["record_not_found"].zh,
        "en": "No such record in your area",
    }
    assert error.body() == {
        "error": {"code": "record_not_found", "message": error.message, "details": {}}
    }
    assert error.text == f"{error.message_zh} / {error.message_en}"


def test_a_code_cannot_be_registered_with_two_statuses() -> None:
    assert register_code("record_not_found", 404, "x", "y") == ERROR_CODES["record_not_found"]
    with pytest.raises(ValueError, match="record_not_found"):
        register_code("record_not_found", 400, "x", "y")
    assert isinstance(ERROR_CODES["record_not_found"], ErrorCode)


def test_library_errors_keep_their_code_and_both_messages() -> None:
    from server.errors import (
        Conflict,
        Unauthorized,
        Unprocessable,
        ValidationFailed,
        from_library_error,
    )
    from sync_protocol.errors import MalformedHeader, Replayed, UnknownSender

    replay = from_library_error(Replayed(), details={"frame": 0})
    assert isinstance(replay, Conflict) and replay.code == "envelope_replayed"
    assert replay.message == {"zh": Replayed().message_zh, "en": Replayed().message}
    unknown = from_library_error(UnknownSender())
    assert isinstance(unknown, Unauthorized) and unknown.code == "device_unknown"
    header = from_library_error(MalformedHeader())
    assert isinstance(header, ValidationFailed) and header.code == "envelope_malformed_header"
    assert isinstance(from_library_error(MalformedHeader(), Unprocessable), Unprocessable)
    with pytest.raises(TypeError):
        from_library_error(ValueError("no message"))


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_class_takes_the_one_constructor(cls: type[ApiError]) -> None:
    error = cls("English", "中文", code="record_not_found", details={"a": 1})
    assert (error.code, error.message) == ("record_not_found", {"zh": "中文", "en": "English"})
    assert error.details["a"] == 1
    retries = cls in (RateLimited, ServiceBusy, StorageFull)
    assert ("Retry-After" in error.headers()) is retries
    assert (error.retry_after == 1) if retries else error.retry_after is None
    assert cls(retry_after=9).headers()["Retry-After"] == "9"
