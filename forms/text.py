"""Localized text: every human-facing string of a form is a map language → text, ``zh`` required.

Language keys are lower-case BCP 47-like tags (``zh``, ``en``, ``ug``, ``bo``, ``ii``, ``zh-hant``).
A plain string stands for ``{"zh": string}`` (XLSForm's plain ``label`` column means ``zh``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]{2,8})*$")

__all__ = ["LANGUAGE_TAG", "LocalizedText", "TextError"]


class TextError(ValueError):
    """A value cannot be read as localized text (no ``zh``, bad language tag, empty text)."""


class LocalizedText(Mapping[str, str]):
    """An immutable, hashable map language → text that always has a ``zh`` entry.

    Raises:
        TextError: from the constructor when ``zh`` is missing, a tag is malformed or a text is
            not a non-empty string.
    """

    __slots__ = ("_items",)

    def __init__(self, texts: Mapping[str, str]) -> None:
        items: dict[str, str] = {}
        for lang, text in texts.items():
            if not isinstance(lang, str) or not LANGUAGE_TAG.match(lang):
                raise TextError(f"bad language tag {lang!r} (expected e.g. 'zh', 'en', 'ug')")
            if not isinstance(text, str) or not text.strip():
                raise TextError(f"text for language {lang!r} must be a non-empty string")
            items[lang] = text
        if "zh" not in items:
            raise TextError("localized text needs a 'zh' entry")
        # zh first, the rest sorted: a canonical order so dumps compare equal.
        ordered = {"zh": items["zh"]} | {k: items[k] for k in sorted(items) if k != "zh"}
        self._items = ordered

    @classmethod
    def from_value(cls, value: Any) -> LocalizedText:
        """Read a plain string (meaning ``zh``), a mapping, or an existing ``LocalizedText``.

        Raises:
            TextError: when the value is neither, or is not valid localized text.
        """
        if isinstance(value, LocalizedText):
            return value
        if isinstance(value, str):
            return cls({"zh": value})
        if isinstance(value, Mapping):
            return cls(value)
        raise TextError("expected a string or a map language → text")

    @classmethod
    def of(cls, zh: str, en: str | None = None, **others: str) -> LocalizedText:
        """Build from keyword texts: ``LocalizedText.of("户主", "Head", ug="...")``."""
        texts = {"zh": zh, **others}
        if en is not None:
            texts["en"] = en
        return cls(texts)

    @property
    def zh(self) -> str:
        """The Chinese text (always present)."""
        return self._items["zh"]

    def text(self, language: str = "zh") -> str:
        """Return the text in ``language``, falling back to ``zh`` when it has no translation."""
        return self._items.get(language, self._items["zh"])

    def to_dict(self) -> dict[str, str]:
        """Return a plain JSON-able dict (``zh`` first)."""
        return dict(self._items)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LocalizedText):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"LocalizedText({self._items!r})"
