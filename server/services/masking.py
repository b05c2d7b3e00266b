"""The one masking rule for sensitive values (ID numbers, phones, health), used by the records
API and by exports alike, so a masked ID reads the same wherever an admin sees it."""

from __future__ import annotations

from typing import Any, Final

MASK: Final = "***"


def mask(value: Any) -> str | None:
    """The masked text of a sensitive value (None stays None, an empty value is '').

    Text of 15+ characters (ID numbers) keeps its first 6 (the county of registration) and last
    4 characters, 7-14 characters (phones) its first 3 and last 4; shorter text and non-text
    values (health lists) become ``***``.
    """
    if value is None:
        return None
    if value == "" or value == []:
        return ""
    if isinstance(value, str):
        n = len(value)
        if n >= 15:
            return value[:6] + "*" * (n - 10) + value[-4:]
        if n >= 7:
            return value[:3] + "*" * (n - 7) + value[-4:]
    return MASK
