"""Settings: declared once, overridable by environment, documented in the README."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.settings import (
    SETTINGS,
    SettingError,
    load_settings,
    normalise_database_url,
    resolve_key_dir,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def _configuration_section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Configuration")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_readme_documents_every_setting_and_nothing_else() -> None:
    section = _configuration_section()
    documented = set(re.findall(r"^\| `(VILLAGE_SYNC_[A-Z_]+)` \|", section, flags=re.M))
    assert documented == {s.env_var for s in SETTINGS}


def test_readme_shows_each_default() -> None:
    section = _configuration_section()
    for setting in SETTINGS:
        default = setting.default
        shown = "(empty)" if default == "" else str(default).lower()
        row = next(line for line in section.splitlines() if f"`{setting.env_var}`" in line)
        assert f"`{shown}`" in row.lower(), setting.env_var


def test_every_setting_has_help_and_a_unique_name() -> None:
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    assert all(len(s.help) > 15 for s in SETTINGS)


def test_defaults_without_environment() -> None:
    values = load_settings(environ={})
    assert values["PORT"] == 8080
    assert values["HOST"] == "127.0.0.1"
    assert values["DATABASE_URL"] == "sqlite:///" + str(Path("var/county.db").resolve())


def test_environment_overrides_and_types() -> None:
    values = load_settings(
        environ={
            "VILLAGE_SYNC_PORT": "9001",
            "VILLAGE_SYNC_PUBLISH_BUILTIN_FORMS": "no",
            "DATABASE_URL": "postgres://u@db/county",
        }
    )
    assert values["PORT"] == 9001
    assert values["PUBLISH_BUILTIN_FORMS"] is False
    assert values["DATABASE_URL"] == "postgresql+psycopg://u@db/county"


def test_prefixed_database_url_wins_over_plain_and_mapping_wins_over_both() -> None:
    env = {"DATABASE_URL": "sqlite:////a.db", "VILLAGE_SYNC_DATABASE_URL": "sqlite:////b.db"}
    assert load_settings(environ=env)["DATABASE_URL"] == "sqlite:////b.db"
    values = load_settings({"database_url": "sqlite:////c.db", "TESTING": True}, environ=env)
    assert values["DATABASE_URL"] == "sqlite:////c.db"
    assert values["TESTING"] is True


@pytest.mark.parametrize(
    ("name", "raw"), [("VILLAGE_SYNC_PORT", "eighty"), ("VILLAGE_SYNC_MIGRATE_ON_START", "maybe")]
)
def test_malformed_values_are_refused_with_the_setting_name(name: str, raw: str) -> None:
    with pytest.raises(SettingError, match=name.removeprefix("VILLAGE_SYNC_")):
        load_settings(environ={name: raw})


def test_key_dir_defaults_next_to_the_sqlite_file(tmp_path: Path) -> None:
    values = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path}/x/county.db"}, environ={})
    assert resolve_key_dir(values) == tmp_path / "x" / "keys"
    values = load_settings({"KEY_DIR": str(tmp_path / "k")}, environ={})
    assert resolve_key_dir(values) == tmp_path / "k"


def test_normalise_database_url_keeps_absolute_and_memory_sqlite() -> None:
    assert normalise_database_url("sqlite:////abs/c.db") == "sqlite:////abs/c.db"
    assert normalise_database_url("sqlite:///:memory:") == "sqlite:///:memory:"
    assert normalise_database_url("postgresql+psycopg://h/d") == "postgresql+psycopg://h/d"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "oracle://x", ""])
def test_an_unsupported_database_url_is_a_setting_error(url: str) -> None:
    with pytest.raises(SettingError, match="DATABASE_URL: unsupported database URL"):
        load_settings({"DATABASE_URL": url}, environ={})
