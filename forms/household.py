"""Household-level cross-checks: rules that span two instruments of one household.

``validate_record`` sees one record; the rules here need two (the roster and the monitoring
record, the roster and the insurance list, ...). They come from DOMAIN.md §5 (labour and risks,
category and household type, households unable to work are not removed), §3-4 (the lists are
prefilled from the roster) and the household core (one person, one ID number).

Each problem is a :class:`HouseholdIssue`: a validation issue (contracts §3) with code
``household``, the rule's id in ``check_id`` and the instrument it points at in ``form_id``, so a
tablet shows it on the right field and the server stores it next to the record's own issues.
``compare_with_departments`` compares the records with department lists keyed by ID number
(医保, 教育, 残联, 民政, 住建) and turns each mismatch into a verification task (a warning), never an
overwrite. Pure: no clock is read unless the caller leaves ``today`` out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from forms.errors import FormsError
from forms.housing import housing_indicator
from forms.identity import (
    IdNumberError,
    VillageCodeError,
    age_on,
    normalize_id_number,
    parse_id_number,
    parse_village_code,
    school_year_reference,
)
from forms.instruments import EDUCATION, HOUSING, INSURANCE, MONITORING, ROSTER
from forms.text import LocalizedText
from forms.validation import Issue, Severity

__all__ = [
    "DepartmentListError",
    "DepartmentLists",
    "HouseholdIssue",
    "check_household",
    "compare_with_departments",
]


#: Full labour: can take ordinary work (a household "lacking labour" has none of these).
FULL_LABOUR = frozenset({"技能劳动力", "普通劳动力"})
#: Any labour at all, weak included (a household with "unstable employment" has some).
ANY_LABOUR = frozenset({"技能劳动力", "普通劳动力", "弱劳动力或半劳动力"})


@dataclass(frozen=True)
class HouseholdIssue(Issue):
    """A validation issue raised by a household cross-check; ``form_id`` names the record."""

    form_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Contracts §3 shape plus ``check`` (the rule id) and ``form_id``."""
        return {**super().to_dict(), "form_id": self.form_id}


def _issue(
    form_id: str,
    rule: str,
    path: str,
    zh: str,
    en: str,
    severity: Severity = "error",
    row: int | None = None,
) -> HouseholdIssue:
    return HouseholdIssue(
        code="household",
        path=path,
        field=path.rsplit("/", 1)[-1],
        row=row,
        message=LocalizedText({"zh": zh, "en": en}),
        severity=severity,
        check_id=rule,
        form_id=form_id,
    )


def _rows(data: Mapping[str, Any] | None, name: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(1-based row number, row) of a repeat, skipping anything that is not a row."""
    rows = (data or {}).get(name)
    if isinstance(rows, list):
        for number, row in enumerate(rows, start=1):
            if isinstance(row, Mapping):
                yield number, row


def _row_path(repeat: str, number: int, row: Mapping[str, Any], name: str) -> str:
    row_id = row.get("_id")
    return f"{repeat}/{row_id if isinstance(row_id, str) and row_id else '#' + str(number)}/{name}"


def _id_key(value: Any) -> str | None:
    """The ID number as compared across records: normalised spelling, first 18 characters."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        return normalize_id_number(value)[:18]
    except IdNumberError:
        return None


def _record(records: Mapping[str, Any], form_id: str) -> Mapping[str, Any] | None:
    """A record's data, or None when it is missing, empty or not an object."""
    data = records.get(form_id)
    return data if isinstance(data, Mapping) and data else None


def _is_amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _selected(data: Mapping[str, Any] | None, name: str) -> list[str]:
    value = (data or {}).get(name)
    if isinstance(value, str):
        return value.split()
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def check_household(
    records: Mapping[str, Mapping[str, Any] | None],
    *,
    village_code: str | None = None,
    today: date | None = None,
) -> list[HouseholdIssue]:
    """Run every cross-check on one household's records (form id → record data).

    ``village_code`` is the household's code from the record envelope (checked against the
    roster's); ``today`` dates school age (defaults to the local date). Rules whose records are
    missing are skipped. Returns errors first, then warnings; never raises for bad data.
    """
    today = today or date.today()
    issues: list[HouseholdIssue] = []
    roster = _record(records, ROSTER)
    members = [row for _, row in _rows(roster, "members")]
    if roster is not None:
        issues.extend(_roster_rules(roster, members, village_code))
        issues.extend(_listed_in_roster(records, members, today))
    monitoring = _record(records, MONITORING)
    if monitoring is not None:
        issues.extend(_monitoring_rules(records, monitoring, roster, members))
    return sorted(issues, key=lambda i: i.severity != "error")


def _roster_rules(
    roster: Mapping[str, Any], members: list[Mapping[str, Any]], village_code: str | None
) -> Iterator[HouseholdIssue]:
    code = roster.get("village_code")
    if isinstance(code, str) and code:
        try:
            parsed = parse_village_code(code)
        except VillageCodeError:
            parsed = None  # the instrument's own constraint reports the format
        for warning in parsed.warnings if parsed else ():
            yield _issue(
                ROSTER,
                warning.code,
                "village_code",
                warning.message_zh,
                warning.message_en,
                "warning",
            )
        if village_code and parsed and parsed.code != village_code:
            yield _issue(
                ROSTER,
                "village_code_mismatch",
                "village_code",
                f"行政村代码{parsed.code}与该户所属村{village_code}不一致",
                f"village code {parsed.code} differs from the household's village {village_code}",
            )
    seen: dict[str, int] = {}
    for number, row in _rows(roster, "members"):
        key = _id_key(row.get("id_number"))
        if key is None:
            continue
        if key in seen:
            yield _issue(
                ROSTER,
                "duplicate_id_number",
                _row_path("members", number, row, "id_number"),
                f"第{number}位成员的证件号码与第{seen[key]}位成员重复",
                f"member {number} has the same ID number as member {seen[key]}",
                row=number,
            )
        else:
            seen[key] = number
    flags = _selected(roster, "low_income_flags")
    if (
        "贫困残疾人户" in flags
        and members
        and not any("残疾" in _selected(m, "health") for m in members)
    ):
        yield _issue(
            ROSTER,
            "disabled_household_without_disabled_member",
            "low_income_flags",
            "标注为贫困残疾人户，但家庭成员健康状况中没有残疾",
            "flagged as a poor household with a disabled member, but no member is disabled",
            "warning",
        )


def _listed_in_roster(
    records: Mapping[str, Mapping[str, Any] | None],
    members: list[Mapping[str, Any]],
    today: date,
) -> Iterator[HouseholdIssue]:
    by_id = {k: m for m in members if (k := _id_key(m.get("id_number")))}
    for form_id, repeat in ((EDUCATION, "children"), (INSURANCE, "members")):
        data = _record(records, form_id)
        if data is None:
            continue
        listed: set[str] = set()
        for number, row in _rows(data, repeat):
            key = _id_key(row.get("id_number"))
            if key is None:
                continue
            listed.add(key)
            if key not in by_id:
                yield _issue(
                    form_id,
                    "not_in_roster",
                    _row_path(repeat, number, row, "id_number"),
                    f"第{number}行人员的身份证号不在家庭成员名单中，请核对",
                    f"row {number}: this ID number is not in the household roster; please check",
                    "warning",
                    number,
                )
            elif form_id == EDUCATION and row.get("dropout_reason") in ("因病", "因残"):
                if _selected(by_id[key], "health") == ["健康"]:
                    yield _issue(
                        form_id,
                        "dropout_illness_but_roster_healthy",
                        _row_path(repeat, number, row, "dropout_reason"),
                        "辍学原因为因病或因残，但家庭成员名单中该生健康状况为“健康”",
                        "the dropout reason is illness or disability but the roster says healthy",
                        "warning",
                        number,
                    )
        if form_id == EDUCATION:
            reference = school_year_reference(today)
            for key, member in by_id.items():
                if key in listed:
                    continue
                try:
                    birth = parse_id_number(key, today=today).birth_date
                except IdNumberError:
                    continue
                if 6 <= age_on(birth, reference) <= 16:
                    yield _issue(
                        form_id,
                        "school_age_member_missing",
                        "children",
                        f"家庭成员{member.get('name') or ''}为6至16周岁学龄人口，未列入义务教育调查",
                        f"member {member.get('name') or ''} is of school age (6-16) but not listed",
                        "warning",
                    )


def _monitoring_rules(
    records: Mapping[str, Mapping[str, Any] | None],
    monitoring: Mapping[str, Any],
    roster: Mapping[str, Any] | None,
    members: list[Mapping[str, Any]],
) -> Iterator[HouseholdIssue]:
    risks = _selected(monitoring, "risks")
    labour = [m.get("labour_capacity") for m in members]
    if members and "缺劳动力" in risks and any(cap in FULL_LABOUR for cap in labour):
        yield _issue(
            MONITORING,
            "lack_of_labour_but_can_work",
            "risks",
            "风险类型为缺劳动力，但家庭成员中有普通劳动力或技能劳动力",
            "the risk is lack of labour, but the roster has members with ordinary or skilled labour",
        )
    nobody_works = members and not any(cap in ANY_LABOUR for cap in labour)
    if nobody_works and "因务工就业不稳" in risks:
        yield _issue(
            MONITORING,
            "unstable_work_but_nobody_can_work",
            "risks",
            "风险类型为因务工就业不稳，但家庭成员均无劳动能力",
            "the risk is unstable employment, but no member of the household can work",
        )
    if nobody_works and monitoring.get("risk_removed") is True:
        yield _issue(
            MONITORING,
            "removed_without_labour",
            "risk_removed",
            "无劳动能力的监测户不能标注风险消除，应纳入综合保障",
            "a household unable to work is not removed from monitoring; it gets social assistance",
        )
    household_type = (roster or {}).get("household_type")
    if monitoring.get("category") == "脱贫不稳定户" and household_type not in (None, "", "脱贫户"):
        yield _issue(
            MONITORING,
            "unstable_needs_lifted_out_household",
            "category",
            "脱贫不稳定户的户类型必须是脱贫户（农户基本信息中为普通农户）",
            "an unstable lifted-out household must be of type 'lifted out of poverty' in the roster",
        )
    copied = monitoring.get("household_type")
    if household_type and copied and copied != household_type:
        yield _issue(
            MONITORING,
            "household_type_differs_from_roster",
            "household_type",
            f"户类型（{copied}）与农户基本信息（{household_type}）不一致",
            f"the household type ({copied}) differs from the roster's ({household_type})",
            "warning",
        )
    count = monitoring.get("member_count")
    if members and isinstance(count, int) and not isinstance(count, bool) and count != len(members):
        yield _issue(
            MONITORING,
            "member_count_differs_from_roster",
            "member_count",
            f"家庭人口数（{count}）与家庭成员名单人数（{len(members)}）不一致",
            f"the household size ({count}) differs from the roster ({len(members)} members)",
            "warning",
        )
    insurance = _record(records, INSURANCE)
    cost = (insurance or {}).get("eligible_out_of_pocket")
    if insurance and "因病" in risks and (cost is None or cost == "" or _is_amount(cost)):
        if cost is None or cost == "":
            yield _issue(
                INSURANCE,
                "illness_risk_needs_medical_cost",
                "eligible_out_of_pocket",
                "监测风险为因病，应填写家庭合规自付医疗费用（大于0）",
                "the household is at risk through illness: enter its eligible out-of-pocket "
                "cost (above 0)",
            )
        elif cost <= 0:
            yield _issue(
                INSURANCE,
                "illness_risk_needs_medical_cost",
                "eligible_out_of_pocket",
                "监测风险为因病，家庭合规自付医疗费用应大于0",
                "the household is at risk through illness, so its eligible out-of-pocket cost "
                "is above 0",
            )
    housing = _record(records, HOUSING)
    if housing and "因安全住房" in risks and housing_indicator(housing).reason == "appraised_safe":
        yield _issue(
            MONITORING,
            "housing_risk_but_house_appraised_safe",
            "risks",
            "风险类型为因安全住房，但住房鉴定为A级或B级，请核实",
            "the risk is unsafe housing, but the house is appraised A or B; please check",
            "warning",
        )


# --- department data (部门数据比对) ------------------------------------------------------------------


_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")


class DepartmentListError(FormsError, ValueError):
    """A department list keyed by something that is not an ID number."""

    code = "department_list_invalid"
    default_message = "a department list must be keyed by ID numbers"
    default_message_zh = "部门数据应以身份证号为键"


def _id_index(raw: Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise DepartmentListError(
            message=f"{what} must map ID numbers to values", message_zh=f"{what} 应为身份证号映射"
        )
    index: dict[str, Any] = {}
    for number, value in raw.items():
        key = _id_key(number)
        if key is None or not _ID_SHAPE.fullmatch(key):
            raise DepartmentListError(
                message=f"{what}: {number!r} is not an ID number",
                message_zh=f"{what} 中的 {number!r} 不是身份证号",
            )
        index[key] = value
    return index


@dataclass(frozen=True)
class DepartmentLists:
    """What departments know about people, keyed by ID number (DOMAIN.md, 部门数据比对).

    Each list is optional (None: that department's data is not available, so nothing is
    compared). Keys are normalised like the roster's, so spelling differences do not matter.

    * ``insured`` (医保): ID → ``"resident"`` or ``"employee"`` for everyone insured.
    * ``enrolled`` (教育): ID → school stage of every enrolled pupil (any text).
    * ``disability_cards`` (残联): ID → the card number or any note, for every card holder.
    * ``assistance`` (民政): ID → ``"低保"`` or ``"特困"``.
    * ``dangerous_houses`` (住建): the household head's ID → appraisal grade on file.

    Raises ``DepartmentListError`` from the constructor for a key that is not an ID number.
    """

    insured: Mapping[str, str] | None = None
    enrolled: Mapping[str, str] | None = None
    disability_cards: Mapping[str, str] | None = None
    assistance: Mapping[str, str] | None = None
    dangerous_houses: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        for name in (
            "insured",
            "enrolled",
            "disability_cards",
            "assistance",
            "dangerous_houses",
        ):
            object.__setattr__(self, name, _id_index(getattr(self, name), name))


_INSURANCE_NAMES = {"resident": "城乡居民基本医保", "employee": "城镇职工基本医保"}
_ASSISTANCE_FLAGS = {"低保": "农村低保户", "特困": "分散供养特困人员"}


def compare_with_departments(
    records: Mapping[str, Mapping[str, Any] | None],
    lists: DepartmentLists,
    *,
    today: date | None = None,
) -> list[HouseholdIssue]:
    """Compare one household's records with department lists; return verification tasks.

    Every mismatch is a *warning* with check id ``department_<what>``: a task for the village
    team to re-check, never a reason to overwrite what the team recorded (DOMAIN.md). ``today``
    dates school age for the enrolment comparison (defaults to the local date).
    """
    today = today or date.today()
    tasks: list[HouseholdIssue] = []
    roster = _record(records, ROSTER)
    members = {
        k: (n, row) for n, row in _rows(roster, "members") if (k := _id_key(row.get("id_number")))
    }
    tasks.extend(_compare_insurance(_record(records, INSURANCE), members, lists.insured))
    tasks.extend(_compare_enrolment(_record(records, EDUCATION), lists.enrolled, today))
    if roster is not None:
        tasks.extend(_compare_roster(roster, members, lists))
    head = next((k for k, (_, row) in members.items() if row.get("relation") == "户主"), None)
    housing = _record(records, HOUSING)
    on_file = (lists.dangerous_houses or {}).get(head) if head else None
    if housing and on_file and housing.get("appraisal_grade") not in (None, "", on_file):
        tasks.append(
            _issue(
                HOUSING,
                "department_appraisal_differs",
                "appraisal_grade",
                f"住建部门鉴定等级为{on_file}，与调查记录（{housing.get('appraisal_grade')}）不一致，请核实",
                f"the housing department has grade {on_file} on file, the survey recorded "
                f"{housing.get('appraisal_grade')}; please verify",
                "warning",
            )
        )
    return tasks


def _compare_insurance(
    insurance: Mapping[str, Any] | None,
    members: Mapping[str, tuple[int, Mapping[str, Any]]],
    insured: Mapping[str, str] | None,
) -> Iterator[HouseholdIssue]:
    if insured is None or insurance is None:
        return
    listed = set()
    for number, row in _rows(insurance, "members"):
        key = _id_key(row.get("id_number"))
        if key is None:
            continue
        listed.add(key)
        recorded = [
            kind
            for kind, name in (
                ("resident", "resident_insurance"),
                ("employee", "employee_insurance"),
            )
            if row.get(name) is True
        ]
        known = insured.get(key)
        if known is None and recorded:
            yield _issue(
                INSURANCE,
                "department_not_insured",
                _row_path("members", number, row, "resident_insurance"),
                "医保部门数据中没有该成员的参保记录，请核实",
                "the medical-insurance department has no enrolment for this member; please verify",
                "warning",
                number,
            )
        elif known is not None and known not in recorded:
            yield _issue(
                INSURANCE,
                "department_insurance_differs",
                _row_path("members", number, row, "resident_insurance"),
                f"医保部门数据显示该成员参加{_INSURANCE_NAMES.get(known, known)}，与调查记录不一致，请核实",
                f"the medical-insurance department has this member in {known} insurance, "
                "unlike the survey; please verify",
                "warning",
                number,
            )
    for key, (_, member) in members.items():
        if key not in listed and key in insured:
            yield _issue(
                INSURANCE,
                "department_insured_not_listed",
                "members",
                f"医保部门显示{member.get('name') or ''}已参保，但参保调查中没有该成员",
                f"the department has {member.get('name') or 'a member'} insured, "
                "but the insurance survey does not list them",
                "warning",
            )


def _compare_enrolment(
    education: Mapping[str, Any] | None, enrolled: Mapping[str, str] | None, today: date
) -> Iterator[HouseholdIssue]:
    if enrolled is None or education is None:
        return
    for number, row in _rows(education, "children"):
        key = _id_key(row.get("id_number"))
        if key is None:
            continue
        schooling = row.get("schooling")
        if key in enrolled and not schooling:
            yield _issue(
                EDUCATION,
                "department_enrolled_but_dropout",
                _row_path("children", number, row, "schooling"),
                f"教育部门显示该生在校（{enrolled[key]}），调查记录为未在校，请核实",
                f"the education department has this child enrolled ({enrolled[key]}), "
                "the survey says out of school; please verify",
                "warning",
                number,
            )
        elif schooling in ("小学", "初中") and key not in enrolled:
            try:
                age = age_on(
                    parse_id_number(key, today=today).birth_date, school_year_reference(today)
                )
            except IdNumberError:
                continue
            if 6 <= age <= 16:
                yield _issue(
                    EDUCATION,
                    "department_not_enrolled",
                    _row_path("children", number, row, "schooling"),
                    "调查记录为在校，但教育部门学籍中没有该生，请核实",
                    "the survey says in school, but the education department has no enrolment; "
                    "please verify",
                    "warning",
                    number,
                )


def _compare_roster(
    roster: Mapping[str, Any],
    members: Mapping[str, tuple[int, Mapping[str, Any]]],
    lists: DepartmentLists,
) -> Iterator[HouseholdIssue]:
    flags = _selected(roster, "low_income_flags")
    for key, (number, row) in members.items():
        if lists.disability_cards is not None and key in lists.disability_cards:
            if "残疾" not in _selected(row, "health"):
                yield _issue(
                    ROSTER,
                    "department_disability_card",
                    _row_path("members", number, row, "health"),
                    "残联数据显示该成员持有残疾人证，但健康状况未选“残疾”，请核实",
                    "the disabled persons' federation lists a disability card for this member, "
                    "but health does not say disabled; please verify",
                    "warning",
                    number,
                )
    # One task per missing flag, however many members civil affairs lists under it.
    kinds = {(lists.assistance or {}).get(key) for key in members}
    for kind, flag in _ASSISTANCE_FLAGS.items():
        if kind in kinds and flag not in flags:
            yield _issue(
                ROSTER,
                "department_assistance_flag_missing",
                "low_income_flags",
                f"民政部门数据显示该户有{kind}对象，但未标注“{flag}”，请核实",
                f"civil affairs lists a {kind} recipient in this household, but the flag "
                f"{flag} is missing; please verify",
                "warning",
            )
