"""The one masking rule for sensitive values (ID numbers, phones, health), used by the records
API, conflicts, quarantine and exports alike, so a masked ID reads the same wherever an admin
sees it — and which values count as sensitive is decided once too (:class:`Sensitivity`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from forms.errors import PathError
from forms.paths import ROW_ID_KEY, SEPARATOR
from sync_protocol.ops import is_tombstone

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


# --- which values are sensitive: one rule for every view ------------------------------------


class Sensitivity:
    """Which field paths of a form are sensitive: a field that was ``sensitive`` in *any*
    published or retired version of the form stays sensitive for every record of the form, so
    choosing a version (``?version=``) or a record made on an older one never unmasks it.

    An unknown form (no usable version) masks everything: nothing can be called safe to show.
    """

    def __init__(self, form_id: str) -> None:
        # Read side only: the cached definitions of usable versions, straight from storage.
        from server.storage import forms as form_store

        self.definitions = [
            found
            for row in form_store.list_versions(form_id)
            if (found := form_store.usable_definition(form_id, row.version)) is not None
        ]

    def __call__(self, path: str) -> bool:
        """True when ``path`` (a data or schema path) names a field sensitive in any version."""
        if not self.definitions:
            return True
        return any(defn.is_sensitive(path) for defn in self.definitions)


def mask_flat(sensitive: Sensitivity, flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat ``{path: value}`` data with the sensitive values masked."""
    return {path: mask_at(sensitive, path, value) for path, value in flat.items()}


def mask_data(sensitive: Sensitivity, data: Mapping[str, Any]) -> dict[str, Any]:
    """Nested record data with the sensitive values masked, judged at the same data paths as
    :func:`mask_flat` over ``forms.flatten(data)`` (a repeat row's fields at
    ``repeat/<row_id>/name``), in one walk: no flatten and unflatten per view.

    Raises ``forms.FormsError`` (``PathError``) for a repeat row without a valid ``_id``, as
    ``flatten`` would.
    """
    return _mask_level(sensitive, data, "")


def _mask_level(sensitive: Sensitivity, obj: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if prefix and key == ROW_ID_KEY:
            out[key] = value
            continue
        path = prefix + key
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            rows = []
            for index, row in enumerate(value):
                row_id = row.get(ROW_ID_KEY)
                if not isinstance(row_id, str) or not row_id or SEPARATOR in row_id:
                    raise PathError(
                        "bad_row_id",
                        f"repeat row at {path}[{index}] needs a string {ROW_ID_KEY!r}",
                        message_zh=f"{path}[{index}] 处的重复组行缺少有效的 _id",
                    )
                rows.append(_mask_level(sensitive, row, f"{path}{SEPARATOR}{row_id}{SEPARATOR}"))
            out[key] = rows
        else:
            out[key] = mask_at(sensitive, path, value)
    return out


def mask_at(sensitive: Sensitivity, path: str, value: Any) -> Any:
    """``value`` found at ``path``, masked when the path is sensitive; a tombstone stays one.

    A mapping (flat ``{path: value}`` data, or a row's ``{name: value}``) is masked key by key:
    a key that is itself a path is judged as one, else as ``path/key``.
    """
    if is_tombstone(value):
        return value
    if path and sensitive(path):
        return mask(value)
    if isinstance(value, Mapping):
        return {
            key: mask_at(sensitive, key if "/" in key or not path else f"{path}/{key}", item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask_at(sensitive, path, item) for item in value]
    return value


def mask_conflict(sensitive: Sensitivity, shown: dict[str, Any]) -> dict[str, Any]:
    """A conflict's detail view with ``base``/``mine``/``theirs`` and each candidate's value
    masked at the conflict's (or the candidate's own) path."""
    path = str(shown.get("path") or "")
    out = dict(shown)
    for side in ("base", "mine", "theirs"):
        if side in out:
            out[side] = mask_at(sensitive, path, out[side])
    out["candidates"] = [
        {**c, "value": mask_at(sensitive, str(c.get("path") or path), c.get("value"))}
        if isinstance(c, dict) and "value" in c
        else c
        for c in out.get("candidates") or []
    ]
    return out
