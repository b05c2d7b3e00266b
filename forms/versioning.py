"""Upgrading records between versions of a form, following each version's ``upgrade`` block.

Publishing a new version never strands data (DESIGN §1): a record made on version 1 stays valid
against version 1, and :func:`upgrade_record` maps it onto a later version through the declared
renames and drops, one version at a time. Nothing is lost on the way: every value that has no
place in the target version — dropped fields, fields removed without a declaration, unknown keys
— is returned in ``kept_aside`` as a flat map *field path → value* (contracts §4 paths, in the
version where the value was set aside), so ``forms.paths.unflatten(kept_aside)`` rebuilds it.

Rename keys are schema paths of the *older* version (``members/old`` renames inside a repeat);
a rename renames one name, so renaming a repeat also moves all of its rows' fields, and a child
rename keeps the parent's own (possibly renamed) name. Row ids and row order are kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from forms.definition import FormDefinition, UpgradeSpec
from forms.errors import UpgradeError
from forms.paths import ORDER_KEY, flatten, split_path, unflatten

__all__ = ["UpgradeResult", "upgrade_chain", "upgrade_record"]


@dataclass
class UpgradeResult:
    """The upgraded record data and every value that found no place in the target version."""

    data: dict[str, Any]
    kept_aside: dict[str, Any] = field(default_factory=dict)
    from_version: int = 0
    to_version: int = 0


def upgrade_chain(
    from_defn: FormDefinition,
    to_defn: FormDefinition,
    versions: Iterable[FormDefinition] = (),
) -> list[tuple[FormDefinition, FormDefinition]]:
    """The ``(older, newer)`` steps from ``from_defn`` to ``to_defn``, oldest first.

    Each newer version's ``upgrade.from_version`` names its predecessor; the predecessors are
    looked up in ``versions`` (plus the two ends).

    Raises:
        UpgradeError: for different forms (``form_mismatch``), a target older than the source
            (``downgrade``), a version without an upgrade block (``no_upgrade_path``) or a needed
            intermediate version that was not given (``missing_version``).
    """
    if from_defn.id != to_defn.id:
        raise UpgradeError(
            "form_mismatch",
            f"cannot upgrade a {from_defn.id} record to form {to_defn.id}",
            message_zh=f"不能把表单 {from_defn.id} 的记录升级为表单 {to_defn.id}",
        )
    if from_defn.version > to_defn.version:
        raise UpgradeError(
            "downgrade",
            f"cannot go from version {from_defn.version} down to {to_defn.version}",
            message_zh=f"不能从版本 {from_defn.version} 降级到 {to_defn.version}",
        )
    known = {d.version: d for d in versions if d.id == to_defn.id}
    known[from_defn.version] = from_defn
    known[to_defn.version] = to_defn
    steps: list[tuple[FormDefinition, FormDefinition]] = []
    current = to_defn
    while current.version > from_defn.version:
        spec = current.upgrade
        if spec is None or spec.from_version < from_defn.version:
            raise UpgradeError(
                "no_upgrade_path",
                f"{current.key} declares no upgrade from version {from_defn.version} or later",
                message_zh=f"{current.key} 没有声明从版本 {from_defn.version} 升级的方式",
            )
        previous = known.get(spec.from_version)
        if previous is None:
            raise UpgradeError(
                "missing_version",
                f"version {spec.from_version} of {to_defn.id} is needed to upgrade but was not given",
                message_zh=f"升级需要表单 {to_defn.id} 的版本 {spec.from_version}",
            )
        steps.append((previous, current))
        current = previous
    steps.reverse()
    return steps


def upgrade_record(
    data: Mapping[str, Any],
    from_defn: FormDefinition,
    to_defn: FormDefinition,
    versions: Iterable[FormDefinition] = (),
) -> UpgradeResult:
    """Map a record made on ``from_defn`` onto ``to_defn``, through every version in between.

    ``versions`` supplies the intermediate definitions (extra ones are ignored). The input is not
    modified. Values are moved, never converted: validate the result with ``to_defn`` to find
    values whose type changed between versions.

    Raises:
        UpgradeError: when ``data`` is not an object (``bad_data``) or there is no declared
            chain of upgrades (see :func:`upgrade_chain`).
        PathError: when the record's repeat rows lack valid, unique ``_id`` values.
    """
    if not isinstance(data, Mapping):
        raise UpgradeError(
            "bad_data",
            f"record data must be an object (field → value), got {type(data).__name__}",
            message_zh="记录数据应为对象（字段名→值），无法升级",
        )
    kept_aside: dict[str, Any] = {}
    current = dict(data)
    for older, newer in upgrade_chain(from_defn, to_defn, versions):
        assert newer.upgrade is not None  # upgrade_chain only returns declared steps
        current, aside = _upgrade_step(current, newer, newer.upgrade)
        for path, value in aside.items():
            if path.endswith("/" + ORDER_KEY) and kept_aside.get(path, value) == value:
                kept_aside[path] = value  # the same row's position, set aside again
                continue
            key = path if path not in kept_aside else f"{path}@v{older.version}"
            kept_aside[key] = value
    return UpgradeResult(
        data=current,
        kept_aside=kept_aside,
        from_version=from_defn.version,
        to_version=to_defn.version,
    )


def _upgrade_step(
    data: Mapping[str, Any], newer: FormDefinition, spec: UpgradeSpec
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One version step: returns (new data, values set aside keyed by their old flat path)."""
    drops = set(spec.drops)
    moved: dict[str, Any] = {}
    aside: dict[str, Any] = {}
    flat = flatten(data)
    for path, value in flat.items():
        segments = split_path(path)
        is_order = len(segments) > 1 and segments[-1] == ORDER_KEY
        names = segments[0:-1:2] if is_order else segments[0::2]
        row_ids = segments[1::2]
        prefixes = ["/".join(names[: k + 1]) for k in range(len(names))]
        if any(p in drops for p in prefixes):
            aside[path] = value
            continue
        new_names = [
            spec.renames[p].rsplit("/", 1)[-1] if p in spec.renames else n
            for p, n in zip(prefixes, names, strict=True)
        ]
        target = newer.field_at("/".join(new_names))
        if target is None or (is_order and not target.is_repeat):
            aside[path] = value
            continue
        rebuilt: list[str] = []
        for k, name in enumerate(new_names):
            rebuilt.append(name)
            if k < len(row_ids):
                rebuilt.append(row_ids[k])
        if is_order:
            rebuilt.append(ORDER_KEY)
        new_path = "/".join(rebuilt)
        if new_path in moved:
            # Two old values land on one new field (a rename onto an existing answer):
            # keep the first, set the other aside rather than overwrite it.
            aside[path] = value
            continue
        moved[new_path] = value
    # A value set aside from inside a row takes its row's position along (a copy: the row
    # itself may live on in the newer version), so unflatten(kept_aside) keeps the row order.
    for path in list(aside):
        segments = split_path(path)
        for end in range(2, len(segments), 2):
            order = "/".join([*segments[:end], ORDER_KEY])
            if order in flat:
                aside.setdefault(order, flat[order])
    return unflatten(moved), aside
