"""Form definitions and their versions: draft → scheduled/published → retired."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa

from forms import FormDefinition, load_definition
from server.storage import models
from server.storage.database import db
from server.storage.revisions import MANIFEST_SCOPE, next_revision
from server.storage.types import plain, utcnow

#: The tables; callers get :class:`Form` and :class:`FormVersion` values, never their rows.
FormRow = models.Form
FormVersionRow = models.FormVersion

DRAFT, SCHEDULED, PUBLISHED, RETIRED = "draft", "scheduled", "published", "retired"
STATUSES = (DRAFT, SCHEDULED, PUBLISHED, RETIRED)


@dataclass(frozen=True)
class Form:
    """A form as stored: id, title (language → text), built-in or not, the area that owns it."""

    id: str
    title: dict[str, Any]
    created_at: datetime
    builtin: bool
    owner_area: str


@dataclass(frozen=True)
class FormVersion:
    """One version of a form: its canonical definition document and publication state."""

    id: int
    form_id: str
    version: int
    status: str  # draft | scheduled | published | retired
    definition: dict[str, Any]
    source: str  # json | xlsform | builtin
    created_at: datetime
    created_by: str
    publish_at: datetime | None
    published_at: datetime | None
    retired_at: datetime | None
    manifest_revision: int


def _version(row: models.FormVersion) -> FormVersion:
    return plain(FormVersion, row)


def _version_row(version: FormVersion) -> models.FormVersion:
    row = db.session.get(FormVersionRow, version.id)
    if row is None:  # pragma: no cover - versions are only deleted with their form
        raise ValueError(f"no version {version.form_id}@{version.version}")
    return row


def get_form(form_id: str) -> Form | None:
    """The form ``form_id``, or None."""
    row = db.session.get(FormRow, form_id)
    return None if row is None else plain(Form, row)


def ensure_form(
    form_id: str, title: dict[str, Any], *, builtin: bool = False, owner_area: str = ""
) -> Form:
    """The form ``form_id``, created if missing (owned by ``owner_area``); its title
    follows the newest upload."""
    form = db.session.get(FormRow, form_id)
    if form is None:
        form = FormRow(
            id=form_id, title=title, created_at=utcnow(), builtin=builtin, owner_area=owner_area
        )
        db.session.add(form)
    else:
        form.title = title
    db.session.flush()
    return plain(Form, form)


def add_version(
    *, form_id: str, version: int, definition: dict[str, Any], source: str, created_by: str
) -> FormVersion:
    """Store a new draft version. Raises :class:`~server.storage.errors.Duplicate` if it exists."""
    row = FormVersionRow(
        form_id=form_id,
        version=version,
        status=DRAFT,
        definition=definition,
        source=source,
        created_at=utcnow(),
        created_by=created_by,
        manifest_revision=0,
    )
    db.session.add(row)
    db.session.flush()
    return _version(row)


def replace_draft(version: FormVersion, definition: dict[str, Any], source: str) -> FormVersion:
    """Replace the definition of a version that is still a draft; returns it as now stored.

    Raises ``ValueError`` if the version is no longer a draft (published content is frozen).
    """
    row = _version_row(version)
    if row.status != DRAFT:
        raise ValueError(f"{row.form_id}@{row.version} is {row.status}, not a draft")
    row.definition = definition
    row.source = source
    db.session.flush()
    return _version(row)


def get_version(form_id: str, version: int) -> FormVersion | None:
    """One version of a form, or None."""
    row = db.session.scalar(
        sa.select(FormVersionRow).where(
            FormVersionRow.form_id == form_id, FormVersionRow.version == version
        )
    )
    return None if row is None else _version(row)


def list_versions(form_id: str) -> list[FormVersion]:
    """Every version of a form, newest first."""
    rows = db.session.scalars(
        sa.select(FormVersionRow)
        .where(FormVersionRow.form_id == form_id)
        .order_by(FormVersionRow.version.desc())
    )
    return [_version(row) for row in rows]


def list_forms() -> list[tuple[Form, list[FormVersion]]]:
    """Every form with its versions (newest first), forms ordered by id."""
    forms = list(db.session.scalars(sa.select(FormRow).order_by(FormRow.id)))
    versions = db.session.scalars(
        sa.select(FormVersionRow).order_by(FormVersionRow.form_id, FormVersionRow.version.desc())
    )
    by_form: dict[str, list[FormVersion]] = {}
    for row in versions:
        by_form.setdefault(row.form_id, []).append(_version(row))
    return [(plain(Form, form), by_form.get(form.id, [])) for form in forms]


def count_forms() -> int:
    """How many forms exist."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(FormRow)) or 0


def set_published(version: FormVersion, now: datetime) -> FormVersion:
    """Publish ``version`` now (from draft or scheduled) and move it up the manifest feed;
    returns it as now stored."""
    row = _version_row(version)
    row.status = PUBLISHED
    row.published_at = now
    row.publish_at = None
    row.manifest_revision = next_revision(MANIFEST_SCOPE)
    db.session.flush()
    return _version(row)


def set_scheduled(version: FormVersion, publish_at: datetime) -> FormVersion:
    """Schedule ``version`` for publication at ``publish_at`` (see :func:`publish_due`); returns
    it as now stored."""
    row = _version_row(version)
    row.status = SCHEDULED
    row.publish_at = publish_at
    db.session.flush()
    return _version(row)


def set_retired(version: FormVersion, now: datetime) -> FormVersion:
    """Retire ``version``: no new records on it; existing ones stay valid. Returns it as now
    stored."""
    row = _version_row(version)
    row.status = RETIRED
    row.retired_at = now
    row.publish_at = None
    row.manifest_revision = next_revision(MANIFEST_SCOPE)
    db.session.flush()
    return _version(row)


def publish_due(now: datetime) -> list[tuple[str, int]]:
    """Publish every scheduled version whose ``publish_at`` is at or before ``now``.

    Returns the ``(form_id, version)`` pairs published by this call. Each row is switched by a
    conditional UPDATE, so when several processes run the job at once each version is published
    (and reported) exactly once. Call inside a write transaction.
    """
    due = db.session.execute(
        sa.select(FormVersionRow.id, FormVersionRow.form_id, FormVersionRow.version)
        .where(FormVersionRow.status == SCHEDULED, FormVersionRow.publish_at <= now)
        .order_by(FormVersionRow.publish_at, FormVersionRow.id)
    ).all()
    published: list[tuple[str, int]] = []
    for row_id, form_id, version in due:
        switched = db.session.execute(
            sa.update(FormVersionRow)
            .where(FormVersionRow.id == row_id, FormVersionRow.status == SCHEDULED)
            .values(
                status=PUBLISHED,
                published_at=now,
                publish_at=None,
                manifest_revision=next_revision(MANIFEST_SCOPE),
            )
        ).rowcount
        if switched:
            published.append((form_id, version))
    return published


def published_versions() -> list[FormVersion]:
    """Every published version (the forms manifest), by form id then version."""
    rows = db.session.scalars(
        sa.select(FormVersionRow)
        .where(FormVersionRow.status == PUBLISHED)
        .order_by(FormVersionRow.form_id, FormVersionRow.version)
    )
    return [_version(row) for row in rows]


def manifest_changes_since(since: int, limit: int = 500) -> list[FormVersion]:
    """Versions whose publication state changed after manifest revision ``since`` (exclusive)."""
    rows = db.session.scalars(
        sa.select(FormVersionRow)
        .where(FormVersionRow.manifest_revision > since)
        .order_by(FormVersionRow.manifest_revision)
        .limit(limit)
    )
    return [_version(row) for row in rows]


#: Loaded definitions of published and retired versions, per database (engine): such a version
#: never changes, so each is parsed once for the engine's lifetime instead of once per op.
_definitions: WeakKeyDictionary[sa.Engine, dict[tuple[str, int], FormDefinition]] = (
    WeakKeyDictionary()
)


def usable_definition(form_id: str, version: int) -> FormDefinition | None:
    """The definition of a published (or retired) form version, or None (drafts and scheduled
    versions are never returned: records cannot be made on them yet)."""
    cache = _definitions.setdefault(db.engine, {})
    found = cache.get((form_id, version))
    if found is not None:
        return found
    row = get_version(form_id, version)
    if row is None or row.status not in (PUBLISHED, RETIRED):
        return None
    found = load_definition(row.definition)
    cache[(form_id, version)] = found
    return found
