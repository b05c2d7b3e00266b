"""Form publishing: upload a draft (JSON or XLSForm), publish now or later, retire, list.

Every definition is validated by the form engine (``forms.load_definition``) before it is
stored, and stored in its canonical form (``forms.dump_definition``) so tablets and server read
the same document. Versions of one form only go up.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import forms
from server.errors import Conflict, Forbidden, NotFound, Unprocessable
from server.services.access import CLI_ACTOR, SCHEDULER_ACTOR, Actor
from server.storage import forms as store
from server.storage.database import writing
from server.storage.forms import FormVersion
from server.storage.types import utcnow


def _invalid(issues: list[dict[str, Any]], *, en: str, zh: str) -> Unprocessable:
    return Unprocessable(en=en, zh=zh, code="form_invalid", details={"issues": issues})


def validate_document(document: Any) -> dict[str, Any]:
    """Validate a definition document and return its canonical form.

    Raises :class:`Unprocessable` (``form_invalid``) with every located issue in
    ``details.issues`` (each ``{"path", "code", "message", "position"?}``).
    """
    try:
        definition = forms.load_definition(document)
    except forms.FormDefinitionError as exc:
        raise _invalid(
            [issue.to_dict() for issue in exc.issues],
            en="the form definition is invalid",
            zh="表单定义有误",
        ) from None
    return forms.dump_definition(definition)


def document_from_xlsform(
    content: bytes, filename: str | None = None, attachments: Mapping[str, bytes] | None = None
) -> dict[str, Any]:
    """Convert an XLSForm workbook to a definition document (see :func:`read_xlsform_upload`)."""
    return read_xlsform_upload(content, filename, attachments)[0]


def read_xlsform_upload(
    content: bytes, filename: str | None = None, attachments: Mapping[str, bytes] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Convert an XLSForm workbook (.xlsx/.xlsm/.xls bytes) to a definition document and the
    importer's located warnings (each ``to_dict`` of an issue) for the admin.

    ``filename`` gives the form id when the workbook has no ``form_id``, as in pyxform;
    ``attachments`` (file name → bytes) hold the choices files of ``select_one_from_file``.
    Raises :class:`Unprocessable` (``form_invalid``) with the importer's located issues (each
    with ``sheet``, ``row``, ``column``, ``header``, ``code`` and a zh/en ``message``) when the
    workbook is outside the supported subset or not a workbook at all.
    """
    from forms.xlsform import XLSFormError, read_xlsform

    try:
        imported = read_xlsform(content, filename, attachments)
    except XLSFormError as exc:
        raise _invalid(
            [issue.to_dict() for issue in exc.issues],
            en="the XLSForm cannot be imported",
            zh="XLSForm 表格无法导入",
        ) from None
    return imported.document, [warning.to_dict() for warning in imported.warnings]


def _internal_version(canonical: dict[str, Any], existing: list[FormVersion]) -> int:
    """The version number a definition is stored under. A form written with an ODK version
    string (``odk_version``) is ordered by that string, as ODK orders it: the same string is
    the same version; a string that sorts after the newest uploaded one gets the next number
    of our internal sequence (when its own digits do not already go up); one that sorts
    before it is refused (``form_version_not_increasing``, located at the settings cell).
    Sets ``canonical["version"]`` and returns it."""
    version = int(canonical["version"])
    label = canonical.get("odk_version")
    written = [
        (row.version, row.definition.get("odk_version") or str(row.version)) for row in existing
    ]
    if label is None or not written:
        return version
    for number, other in written:
        if other == label:
            canonical["version"] = number
            return number
    newest_number, newest_label = max(written)
    if label < newest_label:
        raise Conflict(
            en=f"{canonical['id']} version {label!r} sorts before the newest uploaded version "
            f"{newest_label!r} (ODK orders versions by the string); raise the version in the "
            "settings sheet",
            zh=f"表单 {canonical['id']} 的版本 {label!r} 排在已上传的最新版本 {newest_label!r} 之前"
            "（ODK 按字符串排序版本）；请在 settings 工作表中提高 version",
            code="form_version_not_increasing",
            details={
                "form_id": canonical["id"],
                "version": label,
                "newest": newest_label,
                "sheet": "settings",
                "header": "version",
            },
        )
    if version <= newest_number:
        version = newest_number + 1
    canonical["version"] = version
    return version


def _dropped_sensitive(canonical: dict[str, Any], existing: list[FormVersion]) -> list[str]:
    """Schema paths sensitive in an earlier version but not in ``canonical``, sorted."""
    before: set[str] = set()
    for row in existing:
        if row.version != int(canonical["version"]):
            before |= forms.load_definition(row.definition).sensitive_paths()
    now = forms.load_definition(canonical)
    return sorted(p for p in before if now.find_field(p) is not None and not now.is_sensitive(p))


def check_owner(actor: Actor, form_id: str) -> None:
    """Refuse managing ``form_id`` from outside the area that owns it.

    A form belongs to the area of the admin who first uploaded it (a county admin's county);
    built-ins and forms uploaded from the command line belong to the whole server, so only an
    unrestricted admin manages them. A new form id is free for anyone. Raises
    :class:`Forbidden` (``form_not_yours``).
    """
    form = store.get_form(form_id)
    if form is None:
        return
    owner = "" if form.builtin else form.owner_area
    if not owner.startswith(actor.area_prefix):
        raise Forbidden(
            en=f"form {form_id} belongs to "
            f"{'the whole server' if not owner else 'area ' + owner}; "
            "only its admins manage its versions",
            zh=f"表单 {form_id} 不属于您的管理区域，不能管理其版本",
            code="form_not_yours",
            details={"owner_area": owner},
        )


def upload_draft(
    document: Any, *, actor: Actor, source: str = "json", drop_sensitive: bool = False
) -> FormVersion:
    """Validate and store a definition as a draft version; audited.

    A field ``sensitive`` in an earlier version must stay so: without ``drop_sensitive`` such a
    version is refused (:class:`Unprocessable` ``sensitive_flag_dropped``, ``details.fields``);
    with it the drop is audited (``form.sensitive_dropped``). Either way records of the form stay
    masked there (``services.masking.Sensitivity``: once sensitive, always masked).
    Re-uploading a version that is still a draft replaces it. Raises :class:`Unprocessable`
    (``form_invalid``) with located issues, :class:`Conflict` (``form_version_exists``) when
    that version is already scheduled/published/retired, or (``form_version_not_increasing``)
    when a newer version exists.
    """
    canonical = validate_document(document)
    form_id = canonical["id"]
    with writing():
        existing = store.list_versions(form_id)
        version = _internal_version(canonical, existing)
        same = next((row for row in existing if row.version == version), None)
        if same is not None and same.status != store.DRAFT:
            raise Conflict(
                en=f"{form_id} version {version} is already {same.status}; upload a new version",
                zh=f"表单 {form_id} 第{version}版已{same.status}，请提高版本号",
                code="form_version_exists",
                details={"form_id": form_id, "version": version, "status": same.status},
            )
        newest = max((row.version for row in existing), default=0)
        if same is None and version < newest:
            raise Conflict(
                en=f"{form_id} already has version {newest}; versions only go up",
                zh=f"表单 {form_id} 已有第{newest}版，版本号只能增加",
                code="form_version_not_increasing",
                details={"form_id": form_id, "version": version, "newest": newest},
            )
        check_owner(actor, form_id)
        dropped = _dropped_sensitive(canonical, existing)
        if dropped and not drop_sensitive:
            raise Unprocessable(
                en=f"fields sensitive in an earlier version must stay sensitive: "
                f"{', '.join(dropped)} (upload with drop_sensitive=true to drop the flag)",
                zh=f"以前版本中的敏感字段必须保持敏感：{'、'.join(dropped)}",
                code="sensitive_flag_dropped",
                details={"fields": dropped},
            )
        store.ensure_form(
            form_id,
            canonical.get("title", {}),
            builtin=source == "builtin",
            owner_area="" if source == "builtin" else actor.area_prefix,
        )
        if same is not None:
            row = store.replace_draft(same, canonical, source)
        else:
            row = store.add_version(
                form_id=form_id,
                version=version,
                definition=canonical,
                source=source,
                created_by=actor.name,
            )
        _audit(actor, "form.upload", row, {"source": source})
        if dropped:
            _audit(actor, "form.sensitive_dropped", row, {"fields": dropped})
        return row


def publish(form_id: str, version: int, *, actor: Actor, at: datetime | None = None) -> FormVersion:
    """Publish a draft (or scheduled) version now, or schedule it for ``at``; audited.

    A time at or before now publishes at once. Raises :class:`NotFound` for an unknown version,
    :class:`Forbidden` (``form_not_yours``, :func:`check_owner`) and :class:`Conflict`
    (``form_not_publishable``) for a published or retired one.
    """
    now = utcnow()
    with writing():
        row = _version_or_404(form_id, version)
        check_owner(actor, form_id)
        if row.status not in (store.DRAFT, store.SCHEDULED):
            raise Conflict(
                en=f"{form_id} version {version} is {row.status}, it cannot be published",
                zh=f"表单 {form_id} 第{version}版状态为{row.status}，不能发布",
                code="form_not_publishable",
                details={"status": row.status},
            )
        if at is not None and at > now:
            row = store.set_scheduled(row, at)
            _audit(actor, "form.schedule", row, {"publish_at": at.isoformat()})
        else:
            row = store.set_published(row, now)
            _audit(actor, "form.publish", row, {})
        return row


def retire(form_id: str, version: int, *, actor: Actor) -> FormVersion:
    """Retire a version: tablets stop offering it for new records; audited.

    Raises :class:`NotFound` for an unknown version, :class:`Forbidden` (``form_not_yours``),
    :class:`Conflict` (``form_already_retired``).
    """
    with writing():
        row = _version_or_404(form_id, version)
        check_owner(actor, form_id)
        if row.status == store.RETIRED:
            raise Conflict(
                en=f"{form_id} version {version} is already retired",
                zh=f"表单 {form_id} 第{version}版已停用",
                code="form_already_retired",
            )
        row = store.set_retired(row, utcnow())
        _audit(actor, "form.retire", row, {})
        return row


def publish_due(now: datetime | None = None) -> list[tuple[str, int]]:
    """Publish every scheduled version that is due (the scheduled job calls this); audited.

    Safe to run in several processes at once: each version is published by exactly one call.
    """
    now = now or utcnow()
    with writing():
        done = store.publish_due(now)
        for form_id, version in done:
            SCHEDULER_ACTOR.audit(
                "form.publish",
                target_type="form_version",
                target_id=f"{form_id}@{version}",
                details={"scheduled": True},
            )
        return done


def publish_builtins(*, actor: Actor = CLI_ACTOR) -> list[tuple[str, int]]:
    """Upload and publish the six built-in instruments and the system forms not stored yet.

    Returns the ``(form_id, version)`` pairs published now (empty on later starts).
    """
    from forms.instruments import BUILTIN_IDS, SYSTEM_IDS, builtin_json

    published: list[tuple[str, int]] = []
    # The system forms (the verification outcome) too: a tablet's task outcome is a record.
    for builtin_id in (*BUILTIN_IDS, *SYSTEM_IDS):
        document = builtin_json(builtin_id)
        canonical = validate_document(document)
        if store.get_version(canonical["id"], int(canonical["version"])) is not None:
            continue
        row = upload_draft(canonical, actor=actor, source="builtin")
        publish(row.form_id, row.version, actor=actor)
        published.append((row.form_id, row.version))
    return published


def list_forms() -> list[dict[str, Any]]:
    """Every form with its versions' status (no definitions), for the admin list."""
    return [
        {
            "form_id": form.id,
            "title": form.title,
            "builtin": form.builtin,
            "versions": [version_summary(row) for row in versions],
        }
        for form, versions in store.list_forms()
    ]


def versions(form_id: str) -> list[FormVersion]:
    """Every version of a form, newest first. Raises :class:`NotFound` for an unknown form."""
    rows = store.list_versions(form_id)
    if not rows:
        raise NotFound(en=f"no form {form_id}", zh=f"表单 {form_id} 不存在", code="form_not_found")
    return rows


def get_version(form_id: str, version: int) -> FormVersion:
    """One version with its definition. Raises :class:`NotFound`."""
    return _version_or_404(form_id, version)


def version_summary(row: FormVersion) -> dict[str, Any]:
    """A version's public fields, without the definition."""
    return {
        "form_id": row.form_id,
        "version": row.version,
        # The XLSForm version / form_id as the author wrote them (ODK orders by the string).
        "odk_version": row.definition.get("odk_version") or str(row.version),
        "odk_form_id": row.definition.get("odk_form_id") or row.form_id,
        "status": row.status,
        "source": row.source,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "publish_at": row.publish_at,
        "published_at": row.published_at,
        "retired_at": row.retired_at,
    }


def _version_or_404(form_id: str, version: int) -> FormVersion:
    row = store.get_version(form_id, version)
    if row is None:
        raise NotFound(
            en=f"no version {version} of form {form_id}",
            zh=f"表单 {form_id} 没有第{version}版",
            code="form_version_not_found",
        )
    return row


def _audit(actor: Actor, action: str, row: FormVersion, details: dict[str, Any]) -> None:
    actor.audit(
        action,
        target_type="form_version",
        target_id=f"{row.form_id}@{row.version}",
        area_code=actor.area_prefix,
        details={"form_id": row.form_id, "version": row.version, **details},
    )
