"""Every table of the county server, defined once so one migration creates them all.

Only ``server.storage`` modules import these classes. Conventions:

- timestamps are :class:`UtcDateTime` (aware UTC on both engines);
- JSON documents are ``JsonDocument`` (JSONB on PostgreSQL);
- area scoping is by code prefix: a 12-digit village code, 9-digit township, 6-digit county
  (DOMAIN.md). Rows that belong to an area carry the code (or prefix) in an indexed column so
  role scoping is a ``LIKE 'prefix%'`` in the query, never a filter in Python.
- Deleted records are not removed: the row stays with ``deleted = true`` (the tombstone) and a new
  revision, so a download cursor delivers deletions like any other change.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry

from server.storage.types import BigId, JsonDocument, UtcDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (so migrations can alter them later)."""

    registry = registry(
        metadata=sa.MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={dict[str, Any]: JsonDocument, datetime: UtcDateTime},
    )


# --- people and access -------------------------------------------------------------------


class User(Base):
    """An admin account: county admin or township reviewer, limited to an area code prefix."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(32))  # county_admin | township_reviewer
    area_prefix: Mapped[str] = mapped_column(sa.String(12), default="")
    display_name: Mapped[str] = mapped_column(sa.String(120), default="")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    password_changed_at: Mapped[datetime]


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored. Revoked or expired tokens are refused."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class RateLimitHit(Base):
    """One counted attempt (failed login, enrollment try) for a sliding-window rate limit."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (sa.Index("ix_rate_limit_hits_key_at", "key", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(200))
    at: Mapped[datetime]


class AuditEntry(Base):
    """One admin action: who, what, on which object, in which area, when."""

    __tablename__ = "audit_log"
    __table_args__ = (sa.Index("ix_audit_log_area_at", "area_code", "at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime]
    actor_user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    actor: Mapped[str] = mapped_column(sa.String(120))  # user name, "cli" or "device:<id>"
    action: Mapped[str] = mapped_column(sa.String(64))
    target_type: Mapped[str] = mapped_column(sa.String(32), default="")
    target_id: Mapped[str] = mapped_column(sa.String(80), default="")
    area_code: Mapped[str] = mapped_column(sa.String(12), default="")
    ip: Mapped[str] = mapped_column(sa.String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


# --- devices and enrollment --------------------------------------------------------------


class EnrollmentCode(Base):
    """A one-time code that lets one tablet enrol for a scope; stored as its SHA-256 only."""

    __tablename__ = "enrollment_codes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    scope: Mapped[str] = mapped_column(sa.String(12), index=True)
    label: Mapped[str] = mapped_column(sa.String(120), default="")
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(sa.String(120))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
    device_id: Mapped[str | None] = mapped_column(sa.String(36))


class Device(Base):
    """An enrolled tablet: its public keys, its village-code scope and whether it may sync."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    x25519_public: Mapped[str] = mapped_column(sa.String(64))  # base64 of 32 raw bytes
    ed25519_public: Mapped[str] = mapped_column(sa.String(64))
    scope: Mapped[str] = mapped_column(sa.String(12), index=True)
    label: Mapped[str] = mapped_column(sa.String(120), default="")
    status: Mapped[str] = mapped_column(sa.String(16), default="active")  # active | revoked
    enrolled_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_sync_at: Mapped[datetime | None]
    #: The ``manifest`` cursor of the device's last hello (migration 0007): the device holds
    #: every form version whose manifest revision is at or below it.
    manifest_cursor: Mapped[int | None] = mapped_column(sa.BigInteger)
    #: What the device said it runs on its last authenticated sync (migration 0008).
    app: Mapped[str | None] = mapped_column(sa.String(80))
    enrollment_code_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("enrollment_codes.id", ondelete="SET NULL")
    )


class DeviceOpMark(Base):
    """Per device, the highest op ``seq`` such that every op up to it has been processed."""

    __tablename__ = "device_op_marks"
    device_id: Mapped[str] = mapped_column(
        sa.ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    high_water: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    updated_at: Mapped[datetime]
    # Highest envelope sequence opened from this device (migration 0002): an envelope at or
    # below it is a replay and is refused.
    envelope_seq: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")


class BatchAck(Base):
    """The acks returned for one processed upload batch, replayed verbatim if it comes again."""

    __tablename__ = "batch_acks"
    __table_args__ = (sa.UniqueConstraint("device_id", "batch_key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(sa.ForeignKey("devices.id", ondelete="CASCADE"))
    batch_key: Mapped[str] = mapped_column(sa.String(80))  # e.g. "<first_seq>-<last_seq>"
    first_seq: Mapped[int] = mapped_column(sa.BigInteger)
    last_seq: Mapped[int] = mapped_column(sa.BigInteger)
    acks: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


# --- forms and configuration -------------------------------------------------------------


class Form(Base):
    """A survey instrument's identity; its content lives in :class:`FormVersion` rows."""

    __tablename__ = "forms"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    title: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    builtin: Mapped[bool] = mapped_column(default=False)
    #: The area owning the form ('' = the whole server): its admins manage the versions.
    owner_area: Mapped[str] = mapped_column(sa.String(12), default="", server_default="")


class FormVersion(Base):
    """One version of a form: draft → scheduled/published → retired, with the definition JSON."""

    __tablename__ = "form_versions"
    __table_args__ = (
        sa.UniqueConstraint("form_id", "version"),
        sa.Index("ix_form_versions_status_publish_at", "status", "publish_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    form_id: Mapped[str] = mapped_column(sa.ForeignKey("forms.id", ondelete="CASCADE"))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(sa.String(16))  # draft|scheduled|published|retired
    definition: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(sa.String(16), default="json")  # json | xlsform | builtin
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(sa.String(120))
    publish_at: Mapped[datetime | None]
    published_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]
    # Position in the county-wide manifest feed: bumps whenever the status changes.
    manifest_revision: Mapped[int] = mapped_column(sa.BigInteger, default=0, index=True)


class MonitoringLine(Base):
    """The monitoring income line (yuan per person per year) for a region code prefix and year."""

    __tablename__ = "monitoring_lines"
    __table_args__ = (sa.UniqueConstraint("region_code", "year"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    region_code: Mapped[str] = mapped_column(sa.String(12))
    year: Mapped[int]
    income_line: Mapped[float] = mapped_column(sa.Numeric(12, 2, asdecimal=False))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # e.g. sharp-drop thresholds
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(sa.String(120), default="")


# --- survey data -------------------------------------------------------------------------


class RevisionCounter(Base):
    """One counter per county (6-digit code). Bumped with UPDATE … RETURNING inside the writing
    transaction, so revisions within a county are handed out in commit order and a reader's
    ``since`` cursor can never skip a row committed later with a smaller number."""

    __tablename__ = "revision_counters"
    scope: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    value: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class Household(Base):
    """A household, identified by village code + household number (national-platform number)."""

    __tablename__ = "households"
    __table_args__ = (
        sa.UniqueConstraint("village_code", "household_no"),
        sa.Index("ix_households_county_revision", "county_code", "revision"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    village_code: Mapped[str] = mapped_column(sa.String(12))
    household_no: Mapped[str] = mapped_column(sa.String(64))
    county_code: Mapped[str] = mapped_column(sa.String(6))
    revision: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime]
    created_by_device: Mapped[str | None] = mapped_column(sa.String(36))


class Record(Base):
    """The merged current state of one instrument record (plus indexed envelope columns).

    ``state`` is ``sync_protocol.merge.RecordState.to_dict()`` (per-field value, revision, HLC);
    ``data`` is the plain field → value object for queries and exports.
    """

    __tablename__ = "records"
    __table_args__ = (
        sa.Index("ix_records_county_revision", "county_code", "revision"),
        # A records page in its order (village, household, form, id) without a sort; its count
        # from the index alone (deleted, round).
        sa.Index(
            "ix_records_household_order",
            "village_code",
            "household_no",
            "form_id",
            "record_id",
            "deleted",
            "round",
        ),
        # The same for one form: the ``form_id`` filter and every export page.
        sa.Index(
            "ix_records_form_order",
            "form_id",
            "village_code",
            "household_no",
            "record_id",
            "deleted",
            "round",
        ),
        sa.Index("ix_records_household_no", "household_no"),
        # A village's download walks its own revisions, not the county's.
        sa.Index("ix_records_village_revision", "village_code", "revision"),
        sa.Index("ix_records_form", "form_id", "form_version"),
    )
    record_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    form_id: Mapped[str] = mapped_column(sa.String(64))
    form_version: Mapped[int]
    village_code: Mapped[str] = mapped_column(sa.String(12))
    county_code: Mapped[str] = mapped_column(sa.String(6))
    household_no: Mapped[str] = mapped_column(sa.String(64))
    round: Mapped[str] = mapped_column(sa.String(40))
    revision: Mapped[int] = mapped_column(sa.BigInteger)
    deleted: Mapped[bool] = mapped_column(default=False)
    state: Mapped[dict[str, Any]]
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RecordChange(Base):
    """The change log: every write to a record (who, which op, what changed, at which revision).

    Values that lost a last-writer-wins race are kept here, so no typed value is ever lost.
    """

    __tablename__ = "record_changes"
    __table_args__ = (sa.Index("ix_record_changes_record_revision", "record_id", "revision"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    record_id: Mapped[str] = mapped_column(sa.ForeignKey("records.record_id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(sa.BigInteger)
    kind: Mapped[str] = mapped_column(sa.String(16))  # put | delete | resolve | upgrade
    device_id: Mapped[str | None] = mapped_column(sa.String(36))
    op_seq: Mapped[int | None] = mapped_column(sa.BigInteger)
    user_id: Mapped[int | None]
    hlc: Mapped[str | None] = mapped_column(sa.String(64))
    changes: Mapped[dict[str, Any]]
    outcome: Mapped[dict[str, Any]] = mapped_column(default=dict)  # applied/lost/conflict paths
    at: Mapped[datetime]


class ConflictItem(Base):
    """A true conflict queued for review, with base/mine/theirs values of one field path."""

    __tablename__ = "conflicts"
    __table_args__ = (sa.Index("ix_conflicts_village_status", "village_code", "status"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    record_id: Mapped[str] = mapped_column(
        sa.ForeignKey("records.record_id", ondelete="CASCADE"), index=True
    )
    village_code: Mapped[str] = mapped_column(sa.String(12))
    kind: Mapped[str] = mapped_column(sa.String(32))  # review_field | delete_edit | ...
    path: Mapped[str] = mapped_column(sa.String(255))
    base: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    mine: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    theirs: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    device_id: Mapped[str | None] = mapped_column(sa.String(36))
    status: Mapped[str] = mapped_column(sa.String(16), default="open")  # open | resolved
    resolution: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(sa.String(120))


class QuarantinedOp(Base):
    """An op the server could not apply (invalid, unknown form version), kept whole with reasons."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    op_seq: Mapped[int | None] = mapped_column(sa.BigInteger)
    kind: Mapped[str] = mapped_column(sa.String(32))  # invalid_op | unknown_form_version
    op: Mapped[dict[str, Any]]
    reasons: Mapped[dict[str, Any]]
    village_code: Mapped[str] = mapped_column(sa.String(12), default="")
    status: Mapped[str] = mapped_column(sa.String(16), default="held")  # held | released
    received_at: Mapped[datetime]


class Attachment(Base):
    """One device's upload of a content-addressed file (house photo); ``received_bytes`` <
    ``size`` while resuming. The stored file is shared by address once its bytes are verified."""

    __tablename__ = "attachments"
    sha256: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    #: The uploading device: an upload is (address, device), never shared across devices.
    device_id: Mapped[str] = mapped_column(
        sa.String(36), primary_key=True, index=True, server_default=""
    )
    size: Mapped[int] = mapped_column(sa.BigInteger)
    received_bytes: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    content_type: Mapped[str] = mapped_column(sa.String(100), default="application/octet-stream")
    village_code: Mapped[str] = mapped_column(sa.String(12), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


# --- scheduled jobs ----------------------------------------------------------------------


class JobLock(Base):
    """A scheduled job's lock across app processes (migration 0003).

    A process runs a job only after switching ``locked_until`` from the past to the future with
    one conditional UPDATE, so of several processes firing the same job exactly one runs it; a
    process that dies mid-run leaves a lock that simply expires.
    """

    __tablename__ = "job_locks"
    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(120), default="")
    locked_until: Mapped[datetime]
    last_started_at: Mapped[datetime | None]
    last_finished_at: Mapped[datetime | None]
    last_result: Mapped[dict[str, Any]] = mapped_column(default=dict)


# --- area names --------------------------------------------------------------------------


class AreaName(Base):
    """The name of a township or village code (migration 0007), set by a county admin.

    Pages show "name (code)"; a code without a row is shown as the bare code.
    """

    __tablename__ = "area_names"
    code: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80))
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(sa.String(120), default="")


class ExportJob(Base):
    """An export written in the background (migration 0007): who asked, what, how far it got.

    Only the account that started it may see or download it; the file lives in the export
    folder under the job id.
    """

    __tablename__ = "export_jobs"
    __table_args__ = (sa.Index("ix_export_jobs_user_created", "user_id", "created_at"),)
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    user_id: Mapped[int]
    area: Mapped[str] = mapped_column(sa.String(12), default="")
    form_id: Mapped[str] = mapped_column(sa.String(64))
    form_version: Mapped[int]
    fmt: Mapped[str] = mapped_column(sa.String(8))
    round: Mapped[str | None] = mapped_column(sa.String(40))
    masked: Mapped[bool] = mapped_column(default=True)
    status: Mapped[str] = mapped_column(
        sa.String(16), default="queued"
    )  # queued|running|done|failed
    done_records: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    total_records: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    error: Mapped[str] = mapped_column(sa.String(500), default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


# --- the dashboard's maintained household pictures --------------------------------------------


class HouseholdIndicatorRow(Base):
    """One household's derived indicators for one round (``round_key``) or its newest records
    (``round_key = ''``), kept up to date in the transaction of every record batch that touches
    the household, so the dashboard rolls up with ``GROUP BY`` instead of recomputing.

    ``year``/``year_floating``/``config_key`` say what the row was computed for: a row whose
    round carries no year is computed for the current year, so a new year (or a changed
    monitoring configuration, ``config_key``) makes it stale. ``picture`` is the household's
    picture as the API lists it (without the day counts, which depend on today).
    """

    __tablename__ = "household_indicators"
    __table_args__ = (
        sa.Index("ix_household_indicators_config", "config_key"),
        sa.Index("ix_household_indicators_year", "year_floating", "year"),
        sa.Index("ix_household_indicators_household", "village_code", "household_no"),
        # The household lists and filters of the dashboard: a few percent of the rows each.
        sa.Index(
            "ix_household_indicators_below_line",
            "round_key",
            "income_below_line",
            "per_capita_income",
            "village_code",
            "household_no",
        ),
        sa.Index(
            "ix_household_indicators_monitored",
            "round_key",
            "monitored",
            "identified_on",
            "village_code",
            "household_no",
        ),
        sa.Index("ix_household_indicators_at_risk", "round_key", "newly_at_risk"),
        # ``?indicator=…&failing=…``: the selected households in order, decided or not, from
        # the index alone.
        *(
            sa.Index(
                f"ix_household_indicators_{name}_open",
                "round_key",
                f"{name}_open",
                "village_code",
                "household_no",
                decider,
            )
            for name, decider in (
                ("housing", "housing_safe"),
                ("water", "water_safe"),
                ("education", "dropout_present"),
                ("insurance", "everyone_insured"),
                ("income", "income_below_line"),
            )
        ),
    )
    round_key: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    village_code: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    household_no: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    round_started_at: Mapped[datetime | None]
    year: Mapped[int]
    year_floating: Mapped[bool]
    config_key: Mapped[str] = mapped_column(sa.String(16))
    housing_safe: Mapped[bool | None]
    water_safe: Mapped[bool | None]
    dropout_present: Mapped[bool | None]
    everyone_insured: Mapped[bool | None]
    income_below_line: Mapped[bool | None]
    water_quantity_failed: Mapped[bool]
    water_quality_failed: Mapped[bool]
    water_convenience_failed: Mapped[bool]
    water_reliability_failed: Mapped[bool]
    all_assured: Mapped[bool | None]
    has_category: Mapped[bool]
    monitored: Mapped[bool]
    risk_removed: Mapped[bool | None]
    open_problems: Mapped[int]
    housing_open: Mapped[bool]
    water_open: Mapped[bool]
    education_open: Mapped[bool]
    insurance_open: Mapped[bool]
    income_open: Mapped[bool]
    oldest_problem_on: Mapped[date | None]
    newly_at_risk: Mapped[bool]
    income_change_percent: Mapped[float | None] = mapped_column(sa.Float())
    expense_rise_percent: Mapped[float | None] = mapped_column(sa.Float())
    per_capita_income: Mapped[float | None] = mapped_column(sa.Float())
    identified_on: Mapped[date | None]
    picture: Mapped[dict[str, Any]]


class VillageIndicatorCounts(Base):
    """The household counts of one village and round (``round_key`` as in
    :class:`HouseholdIndicatorRow`), summed from its household rows whenever one of them
    changes, in the same transaction: the dashboard adds up villages, never households."""

    __tablename__ = "village_indicators"
    round_key: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    village_code: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    round_started_at: Mapped[datetime | None]
    households: Mapped[int]
    housing_passing: Mapped[int]
    housing_failing: Mapped[int]
    water_passing: Mapped[int]
    water_failing: Mapped[int]
    education_passing: Mapped[int]
    education_failing: Mapped[int]
    insurance_passing: Mapped[int]
    insurance_failing: Mapped[int]
    income_passing: Mapped[int]
    income_failing: Mapped[int]
    water_quantity_failed: Mapped[int]
    water_quality_failed: Mapped[int]
    water_convenience_failed: Mapped[int]
    water_reliability_failed: Mapped[int]
    all_assured: Mapped[int]
    incomplete: Mapped[int]
    with_category: Mapped[int]
    risk_removed: Mapped[int]
    open_problems: Mapped[int]
    housing_open: Mapped[int]
    water_open: Mapped[int]
    education_open: Mapped[int]
    insurance_open: Mapped[int]
    income_open: Mapped[int]
    oldest_problem_on: Mapped[date | None]
    newly_at_risk: Mapped[int]
    monitored: Mapped[int]


# --- department lists (migration 0008_department_lists) ----------------------------------------


class DepartmentMapping(Base):
    """Which header of a department's file holds which value, saved per (area, department) so
    the next month's file of that department is read the same way."""

    __tablename__ = "department_mappings"
    area: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    department: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    columns: Mapped[dict[str, Any]]  # field name → header text
    updated_at: Mapped[datetime]
    updated_by: Mapped[str] = mapped_column(sa.String(120), default="")


class DepartmentRound(Base):
    """One imported department file: department, period, as-of date, its SHA-256 (the same file
    twice is one round), the counts and the signals handed to the task service."""

    __tablename__ = "department_rounds"
    __table_args__ = (sa.UniqueConstraint("area", "department", "file_sha256"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    area: Mapped[str] = mapped_column(sa.String(12))
    department: Mapped[str] = mapped_column(sa.String(32))
    period: Mapped[str] = mapped_column(sa.String(16))
    as_of: Mapped[date]
    file_sha256: Mapped[str] = mapped_column(sa.String(64))
    file_name: Mapped[str] = mapped_column(sa.String(200), default="")
    counts: Mapped[dict[str, Any]]
    # Masked, shown on tablets: never an ID in clear (server.services.task_reasons).
    signals: Mapped[dict[str, Any]]
    signals_delivered: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(sa.String(120), default="")


class DepartmentRow(Base):
    """One person row of a department file: where it matched (or why not) in clear columns for
    scoping, the row's cells sealed (AES-256-GCM under a key derived from the server key
    ``key_id``): they hold ID numbers, medical amounts, disability status."""

    __tablename__ = "department_rows"
    __table_args__ = (
        sa.Index("ix_department_rows_round_problem", "round_id", "problem"),
        sa.Index("ix_department_rows_village_household", "village_code", "household_no"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    round_id: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("department_rounds.id", ondelete="CASCADE")
    )
    excel_row: Mapped[int]
    village_code: Mapped[str] = mapped_column(sa.String(12), default="")  # "" when unknown
    household_no: Mapped[str] = mapped_column(sa.String(64), default="")  # "" when unmatched
    matched_by: Mapped[str] = mapped_column(
        sa.String(32), default=""
    )  # id_number | name_birth_village
    problem: Mapped[str] = mapped_column(sa.String(32), default="")  # "" when matched
    key_id: Mapped[str] = mapped_column(sa.String(64))
    sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)


# --- verification tasks (issue 17) ------------------------------------------------------------


class VerificationTask(Base):
    """One household's verification task (migration 0009): every reason found for it, its
    deadline, and the outcome a village team sent back.

    At most one ``open`` task per household (the partial unique index): a new finding for a
    household with an open task adds its reasons to that task. ``reason_keys`` are the
    ``origin|source|code|details`` keys already taken, so a re-run of the same import adds
    nothing. ``revision`` comes from the county's ``task:<county>`` counter, taken in the writing
    transaction: the devices' ``tasks`` download stream pages on it.
    """

    __tablename__ = "verification_tasks"
    __table_args__ = (
        sa.Index("ix_verification_tasks_county_revision", "county_code", "revision"),
        sa.Index("ix_verification_tasks_household", "village_code", "household_no"),
        sa.Index("ix_verification_tasks_status_deadline", "status", "deadline"),
        sa.Index(
            "uq_verification_tasks_open_household",
            "village_code",
            "household_no",
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        ),
        # A village-level task (no household: a listed person the roster lacks) is one per
        # person (``subject``) and village while open (migration 0011_village_tasks).
        sa.Index(
            "uq_verification_tasks_open_subject",
            "village_code",
            "subject",
            unique=True,
            sqlite_where=sa.text("status = 'open' AND subject IS NOT NULL"),
            postgresql_where=sa.text("status = 'open' AND subject IS NOT NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    village_code: Mapped[str] = mapped_column(sa.String(12))
    county_code: Mapped[str] = mapped_column(sa.String(6))
    # None for a village-level task; ``subject`` then names the person it is about.
    household_no: Mapped[str | None] = mapped_column(sa.String(64))
    subject: Mapped[str | None] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16), default="open")  # open|worked|closed
    reasons: Mapped[list[Any]] = mapped_column(JsonDocument, default=list)
    reason_keys: Mapped[list[Any]] = mapped_column(JsonDocument, default=list)
    origins: Mapped[list[Any]] = mapped_column(JsonDocument, default=list)
    outcome: Mapped[dict[str, Any] | None]
    deadline: Mapped[date]
    escalated: Mapped[bool] = mapped_column(default=False)
    escalated_at: Mapped[datetime | None]
    revision: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    worked_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(sa.String(120))


# --- round-over-round alerts (issue 17) -----------------------------------------------------


class RoundAlertRun(Base):
    """One run of the round-over-round alerts (migration 0010): a round compared with the
    households' previous rounds under one monitoring configuration, over an area.

    Runs are never rewritten: ``findings_key`` fingerprints the configuration and every finding,
    so running a round again with the same configuration and the same records finds the stored
    run, and anything else (a changed threshold, a late record) is a new run beside the old one.
    ``config`` is the configuration the run used (``MonitoringConfig.to_mapping``).
    """

    __tablename__ = "round_alert_runs"
    __table_args__ = (
        sa.UniqueConstraint("round", "area_prefix", "findings_key"),
        sa.Index("ix_round_alert_runs_round_started", "round", "started_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    round: Mapped[str] = mapped_column(sa.String(40))
    area_prefix: Mapped[str] = mapped_column(sa.String(12), default="")
    config_key: Mapped[str] = mapped_column(sa.String(16))
    findings_key: Mapped[str] = mapped_column(sa.String(64))
    config: Mapped[dict[str, Any]]
    counts: Mapped[dict[str, Any]]
    households: Mapped[int]
    signals: Mapped[int]
    run_by: Mapped[str] = mapped_column(sa.String(120), default="")
    started_at: Mapped[datetime]


class RoundAlertFinding(Base):
    """What one run found for one household: problems new, persisting and resolved against its
    previous round, the changes of income and rigid expenses, and the task reasons sent."""

    __tablename__ = "round_alert_findings"
    run_id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    village_code: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    household_no: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    previous_round: Mapped[str | None] = mapped_column(sa.String(40))
    monitored: Mapped[bool]
    income_change_percent: Mapped[float | None] = mapped_column(sa.Float())
    expense_rise_percent: Mapped[float | None] = mapped_column(sa.Float())
    problems: Mapped[dict[str, Any]]
    reasons: Mapped[dict[str, Any]]
