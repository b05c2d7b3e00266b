"""Form definitions and their versions: draft → scheduled/published → retired."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa

from forms import FormDefinition, load_definition
from server.storage.database import db
from server.storage.models import Form, FormVersion
from server.storage.revisions import MANIFEST_SCOPE, next_revision
from server.storage.types import utcnow

DRAFT, SCHEDULED, PUBLISHED, RETIRED = "draft", "scheduled", "published", "retired"
STATUSES = (DRAFT, SCHEDULED, PUBLISHED, RETIRED)


def get_form(form_id: str) -> Form | None:
    """The form row of ``form_id``, or None."""
    return db.session.get(Form, form_id)


def ensure_form(
    form_id: str, title: dict[str, Any], *, builtin: bool = False, owner_area: str = ""
) -> Form:
    """The form row for ``form_id``, created if missing (owned by ``owner_area``); its title
    follows the newest upload."""
    form = db.session.get(Form, form_id)
    if form is None:
        form = Form(
            id=form_id, title=title, created_at=utcnow(), builtin=builtin, owner_area=owner_area
        )
        db.session.add(form)
    else:
        form.title = title
    db.session.flush()
    return form


def add_version(
    *, form_id: str, version: int, definition: dict[str, Any], source: str, created_by: str
) -> FormVersion:
    """Store a new draft version. Raises :class:`~server.storage.errors.Duplicate` if it exists."""
    row = FormVersion(
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
    return row


def replace_draft(row: FormVersion, definition: dict[str, Any], source: str) -> FormVersion:
    """Replace the definition of a version that is still a draft.

    Raises ``ValueError`` if the version is no longer a draft (published content is frozen).
    """
    if row.status != DRAFT:
        raise ValueError(f"{row.form_id}@{row.version} is {row.status}, not a draft")
    row.definition = definition
    row.source = source
    db.session.flush()
    return row


def get_version(form_id: str, version: int) -> FormVersion | None:
    """One version of a form, or None."""
    return db.session.scalar(
        sa.select(FormVersion).where(FormVersion.form_id == form_id, FormVersion.version == version)
    )


def list_versions(form_id: str) -> list[FormVersion]:
    """Every version of a form, newest first."""
    return list(
        db.session.scalars(
            sa.select(FormVersion)
            .where(FormVersion.form_id == form_id)
            .order_by(FormVersion.version.desc())
        )
    )


def list_forms() -> list[tuple[Form, list[FormVersion]]]:
    """Every form with its versions (newest first), forms ordered by id."""
    forms = list(db.session.scalars(sa.select(Form).order_by(Form.id)))
    versions = db.session.scalars(
        sa.select(FormVersion).order_by(FormVersion.form_id, FormVersion.version.desc())
    )
    by_form: dict[str, list[FormVersion]] = {}
    for row in versions:
        by_form.setdefault(row.form_id, []).append(row)
    return [(form, by_form.get(form.id, [])) for form in forms]


def count_forms() -> int:
    """How many forms exist."""
    return db.session.scalar(sa.select(sa.func.count()).select_from(Form)) or 0


def set_published(row: FormVersion, now: datetime) -> None:
    """Publish ``row`` now (from draft or scheduled) and move it up the manifest feed."""
    row.status = PUBLISHED
    row.published_at = now
    row.publish_at = None
    row.manifest_revision = next_revision(MANIFEST_SCOPE)
    db.session.flush()


def set_scheduled(row: FormVersion, publish_at: datetime) -> None:
    """Schedule ``row`` for publication at ``publish_at`` (see :func:`publish_due`)."""
    row.status = SCHEDULED
    row.publish_at = publish_at
    db.session.flush()


def set_retired(row: FormVersion, now: datetime) -> None:
    """Retire ``row``: no new records on it; existing ones stay valid."""
    row.status = RETIRED
    row.retired_at = now
    row.publish_at = None
    row.manifest_revision = next_revision(MANIFEST_SCOPE)
    db.session.flush()


def publish_due(now: datetime) -> list[tuple[str, int]]:
    """Publish every scheduled version whose ``publish_at`` is at or before ``now``.

    Returns the ``(form_id, version)`` pairs published by this call. Each row is switched by a
    conditional UPDATE, so when several processes run the job at once each version is published
    (and reported) exactly once. Call inside a write transaction.
    """
    due = db.session.execute(
        sa.select(FormVersion.id, FormVersion.form_id, FormVersion.version)
        .where(FormVersion.status == SCHEDULED, FormVersion.publish_at <= now)
        .order_by(FormVersion.publish_at, FormVersion.id)
    ).all()
    published: list[tuple[str, int]] = []
    for row_id, form_id, version in due:
        switched = db.session.execute(
            sa.update(FormVersion)
            .where(FormVersion.id == row_id, FormVersion.status == SCHEDULED)
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
    return list(
        db.session.scalars(
            sa.select(FormVersion)
            .where(FormVersion.status == PUBLISHED)
            .order_by(FormVersion.form_id, FormVersion.version)
        )
    )


def manifest_changes_since(since: int, limit: int = 500) -> list[FormVersion]:
    """Versions whose publication state changed after manifest revision ``since`` (exclusive)."""
    return list(
        db.session.scalars(
            sa.select(FormVersion)
            .where(FormVersion.manifest_revision > since)
            .order_by(FormVersion.manifest_revision)
            .limit(limit)
        )
    )


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
