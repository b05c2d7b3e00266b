"""Realistic sample households for demos, benchmarks and tests.

``sample_household(seed)`` returns the six instruments' record data (contracts §3) of one made-up
but plausible rural household: Chinese names, ID numbers with correct GB 11643 check digits whose
birth dates and sexes agree with the roster, ages and schooling that fit together, incomes in
the range monitoring teams record. The same seed always gives the same household, and every
household validates without errors or warnings against the built-in instruments (given the
``monitoring_line`` and the village's water region type in the evaluation context).

``problem_household(case, seed)`` gives households that validate just as cleanly but show one
problem the county must clear (a dangerous house, a dropout, ...), for dashboards and demos.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from forms.errors import FormsError
from forms.identity import age_on, id_check_char, school_year_reference

__all__ = [
    "DEFAULT_TODAY",
    "DEFAULT_VILLAGE_CODE",
    "PROBLEM_CASES",
    "UnknownProblemCaseError",
    "problem_household",
    "sample_household",
]

DEFAULT_VILLAGE_CODE = "530102001201"
DEFAULT_TODAY = date(2026, 11, 25)
DEFAULT_MONITORING_LINE = 8700.0  # Yunnan's line for 2025 (DOMAIN.md)
INCOME_KEYS = ("wage_income", "business_income", "property_income", "transfer_income")

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢"
MALE_GIVEN = "建国 志强 永福 国华 文军 海林 明亮 春生 德才 子轩 浩然 宇航 俊杰 家豪 天佑 正华 光荣 树林 世民 金龙"
FEMALE_GIVEN = "秀英 桂兰 玉梅 春花 丽娟 海燕 小红 美玲 雨涵 欣怡 梓萱 思雨 佳琪 晓燕 翠萍 凤英 丽华 金凤 银花 慧敏"
ELDER_GIVEN_M = "老三 福贵 长顺 有才 占山"
ELDER_GIVEN_F = "淑珍 秀兰 桂芝 凤兰 玉珍"


class UnknownProblemCaseError(FormsError, KeyError):
    """``problem_household`` was asked for a case it does not know."""

    code = "unknown_problem_case"
    default_message = "no such sample problem case"
    default_message_zh = "没有这个示例问题户"

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


@dataclass
class _Person:
    row_id: str
    name: str
    id_number: str
    birth: date
    sex: str  # 男 | 女
    relation: str
    health: list[str]
    labour: str
    education_level: str | None = None
    schooling: str | None = None
    work_location: str | None = None
    work_months: int | None = None

    def age(self, on: date) -> int:
        return age_on(self.birth, on)

    @property
    def can_work(self) -> bool:
        return self.labour in ("技能劳动力", "普通劳动力", "弱劳动力或半劳动力")


class _Maker:
    """One household's random choices, all drawn from one seeded generator."""

    def __init__(self, seed: int, village_code: str, today: date) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.village_code = village_code
        self.region = village_code[:6]
        self.today = today
        self.used_ids: set[str] = set()

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def birth(self, age: int) -> date:
        """A birth date giving exactly ``age`` on ``today``."""
        latest = date(self.today.year - age, 1, 1)
        start = latest - timedelta(days=365)
        candidate = start
        for _ in range(20):
            candidate = start + timedelta(days=self.rng.randrange(0, 730))
            if age_on(candidate, self.today) == age:
                return candidate
        # Twenty misses in a row are all but impossible; walk to the right age all the same.
        step = timedelta(days=1 if age_on(candidate, self.today) > age else -1)
        while age_on(candidate, self.today) != age:
            candidate += step
        return candidate

    def id_number(self, birth: date, sex: str) -> str:
        while True:
            sequence = self.rng.randrange(0, 1000)
            # Digit 17 (the last of the sequence) is odd for men, even for women.
            if (sequence % 2 == 1) != (sex == "男"):
                sequence = (sequence + 1) % 1000
            first17 = f"{self.region}{birth:%Y%m%d}{sequence:03d}"
            number = first17 + id_check_char(first17)
            if number not in self.used_ids:
                self.used_ids.add(number)
                return number

    def given_name(self, sex: str, age: int) -> str:
        if age >= 60:
            pool = ELDER_GIVEN_M if sex == "男" else ELDER_GIVEN_F
        else:
            pool = MALE_GIVEN if sex == "男" else FEMALE_GIVEN
        return self.rng.choice(pool.split())

    def content_address(self, label: str) -> str:
        digest = hashlib.sha256(f"village-sync-sample:{self.seed}:{label}".encode()).hexdigest()
        return f"sha256:{digest}"

    def date_text(self, d: date) -> str:
        return d.isoformat()


def _schooling_for(age_in_school_year: int, rng: random.Random) -> tuple[str | None, str | None]:
    """(education_level, schooling) of the roster for an age at 1 September."""
    if age_in_school_year < 3:
        return "学龄前儿童", None
    if age_in_school_year < 6:
        return None, "学前教育"
    if age_in_school_year <= 11:
        return None, "小学"
    if age_in_school_year <= 14:
        return None, {12: "七年级", 13: "八年级", 14: "九年级"}[age_in_school_year]
    if age_in_school_year <= 17:
        return None, rng.choice(["普通高中", "普通高中", "中职"])
    if age_in_school_year <= 21 and rng.random() < 0.35:
        return None, rng.choice(["高职", "大专及以上"])
    return rng.choice(["初中", "初中", "高中", "中专", "大专及以上"]), None


def _education_schooling(roster_schooling: str | None) -> str | None:
    """The compulsory-education instrument's wording for a roster schooling value."""
    if roster_schooling in ("七年级", "八年级", "九年级"):
        return "初中"
    if roster_schooling in ("学前教育", "小学", "普通高中", "中职"):
        return roster_schooling
    return None


def _make_person(
    maker: _Maker, *, age: int, sex: str, relation: str, surname: str, sick: float = 0.1
) -> _Person:
    rng = maker.rng
    birth = maker.birth(age)
    school_age = age_on(birth, school_year_reference(maker.today))
    education_level, schooling = _schooling_for(school_age, rng)
    health = ["健康"]
    roll = rng.random()
    if age >= 60 and roll < 0.45:
        health = ["长期慢性病"]
    elif roll < sick:
        health = [rng.choice(["长期慢性病", "患有大病", "残疾"])]
    if schooling is not None or age < 16:
        labour = "无劳动力"
    elif age >= 70 or "患有大病" in health:
        labour = rng.choice(["丧失劳动力", "无劳动力"])
    elif age >= 60 or health != ["健康"]:
        labour = "弱劳动力或半劳动力"
    else:
        labour = rng.choice(["普通劳动力", "普通劳动力", "技能劳动力"])
    person = _Person(
        row_id=maker.uuid(),
        name=surname + maker.given_name(sex, age),
        id_number=maker.id_number(birth, sex),
        birth=birth,
        sex=sex,
        relation=relation,
        health=health,
        labour=labour,
        education_level=education_level,
        schooling=schooling,
    )
    if labour in ("技能劳动力", "普通劳动力") and rng.random() < 0.6:
        person.work_location = rng.choice(["县内", "省内县外", "省外", "省外"])
        person.work_months = rng.randint(3, 11)
    return person


def _members(maker: _Maker) -> list[_Person]:
    rng = maker.rng
    surname = rng.choice(SURNAMES)
    head_sex = "男" if rng.random() < 0.85 else "女"
    head_age = rng.randint(28, 76)
    people = [_make_person(maker, age=head_age, sex=head_sex, relation="户主", surname=surname)]
    other = "女" if head_sex == "男" else "男"
    if rng.random() < 0.8:
        spouse_age = max(22, min(85, head_age + rng.randint(-5, 4)))
        spouse_surname = rng.choice(SURNAMES)
        people.append(
            _make_person(maker, age=spouse_age, sex=other, relation="配偶", surname=spouse_surname)
        )
    if head_age <= 62:
        oldest = min(head_age - 20, 30)
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
            if oldest < 0:
                break
            sex = rng.choice(["男", "女"])
            child_age = rng.randint(0, oldest)
            people.append(
                _make_person(
                    maker,
                    age=child_age,
                    sex=sex,
                    relation="之子" if sex == "男" else "之女",
                    surname=surname,
                    sick=0.04,
                )
            )
    if head_age <= 55 and rng.random() < 0.3:
        elder_sex = rng.choice(["男", "女"])
        people.append(
            _make_person(
                maker,
                age=min(95, head_age + rng.randint(22, 32)),
                sex=elder_sex,
                relation="之父母",
                surname=surname if elder_sex == "男" else rng.choice(SURNAMES),
            )
        )
    return people


def _roster(maker: _Maker, people: list[_Person], household_type: str) -> dict[str, Any]:
    rng = maker.rng
    flags: list[str] = []
    if household_type == "脱贫户" and rng.random() < 0.3:
        flags.append("农村低保户")
    if any("残疾" in p.health for p in people) and rng.random() < 0.5:
        flags.append("贫困残疾人户")
    if household_type == "脱贫户" and rng.random() < 0.1:
        flags.append("易地扶贫搬迁户")
    members = []
    for person in people:
        row: dict[str, Any] = {
            "_id": person.row_id,
            "name": person.name,
            "id_type": "resident_id",
            "id_number": person.id_number,
            "relation": person.relation,
            "sex": person.sex,
            "health": list(person.health),
            "labour_capacity": person.labour,
        }
        if person.education_level is not None:
            row["education_level"] = person.education_level
        if person.schooling is not None:
            row["schooling"] = person.schooling
        if person.work_location is not None:
            row["work_location"] = person.work_location
            row["work_months"] = person.work_months
        members.append(row)
    data: dict[str, Any] = {
        "village_code": maker.village_code,
        "natural_village": rng.choice(["大村", "小寨", "新村", "上营", "下营", "河边"])
        + rng.choice(["一组", "二组", "三组", "四组"]),
        "household_no": f"{maker.village_code}{maker.seed % 100000:05d}",
        "household_type": household_type,
        "low_income_flags": flags,
        "members": members,
    }
    if rng.random() < 0.9:
        data["phone"] = rng.choice(["13", "15", "18", "17", "19"]) + "".join(
            str(rng.randrange(10)) for _ in range(9)
        )
    return data


def _housing(maker: _Maker, *, grade: str | None = None, renovated: bool = True) -> dict[str, Any]:
    rng = maker.rng
    grade = grade or rng.choices(["A", "B", "C", "D"], weights=[55, 33, 8, 4])[0]
    year = maker.today.year
    data: dict[str, Any] = {"appraisal_grade": grade}
    if grade != "无房":
        data["appraisal_date"] = maker.date_text(maker.today - timedelta(days=rng.randint(30, 900)))
        data["structure"] = rng.choice(
            [
                "砖混（有构造柱/圈梁）",
                "砖混（有构造柱/圈梁）",
                "钢筋混凝土",
                "砖木/石木/土木（木框架）",
            ]
            if grade in ("A", "B")
            else ["土坯/夯土房（无立柱）", "简易砌体（无构造柱/圈梁）", "砖木/石木/土木（木框架）"]
        )
        data["build_year"] = rng.randint(1995, year) if grade in "AB" else rng.randint(1965, 2000)
        data["storeys"] = rng.choice([1, 1, 2])
        data["floor_area"] = round(rng.uniform(55, 220), 1)
    if grade in ("A", "B"):
        data["safety_basis"] = "鉴定安全"
    else:
        method = {"C": "维修加固", "D": "拆除重建", "无房": "选址新建"}[grade]
        data["renovation_method"] = method
        data["renovation_year"] = rng.randint(max(2000, year - 5), year)
        data["renovation_accepted"] = renovated
        data["renovation_subsidy"] = float(rng.choice([10000, 15000, 20000, 30000, 40000]))
        data["safety_certificate"] = renovated
        if renovated:
            data["safety_basis"] = "改造安全"
    data["photos"] = [
        {"_id": maker.uuid(), "photo": maker.content_address(f"house-{i}"), "caption": caption}
        for i, caption in enumerate(
            rng.sample(["正面", "侧面", "屋顶", "承重墙"], k=rng.randint(1, 2))
        )
    ]
    data["location"] = {
        "lat": round(25.04 + rng.uniform(-0.3, 0.3), 6),
        "lon": round(102.71 + rng.uniform(-0.3, 0.3), 6),
        "accuracy": round(rng.uniform(3, 15), 1),
    }
    return data


def _water(maker: _Maker, *, litres: float | None = None) -> dict[str, Any]:
    rng = maker.rng
    supply = rng.choices(["集中供水入户", "集中供水点", "分散供水"], weights=[75, 12, 13])[0]
    data: dict[str, Any] = {
        "supply_type": supply,
        "litres_per_person_day": litres if litres is not None else float(rng.randint(40, 95)),
        "quality_method": "检测报告" if supply != "分散供水" else "现场查看",
        "quality_ok": True,
        "interruption_days": rng.randint(0, 12),
    }
    if supply == "分散供水":
        data["source_type"] = rng.choice(["井", "井", "泉", "窖"])
    if supply != "集中供水入户":
        data["carry_minutes"] = rng.randint(3, 18)
        data["carry_distance_m"] = rng.randint(30, 600)
    return data


def _education(
    maker: _Maker,
    people: list[_Person],
    *,
    dropout: _Person | None = None,
    dropout_reason: str | None = None,
) -> dict[str, Any]:
    reference = school_year_reference(maker.today)
    rng = maker.rng
    parents_away = any(
        p.relation in ("户主", "配偶") and p.work_location in ("省外", "省内县外") for p in people
    )
    children = []
    for person in people:
        age = age_on(person.birth, reference)
        if not 6 <= age <= 16 or person.relation not in ("之子", "之女"):
            continue
        row: dict[str, Any] = {
            "_id": maker.uuid(),
            "name": person.name,
            "id_number": person.id_number,
            "health": list(person.health),
        }
        schooling = _education_schooling(person.schooling)
        if person is dropout:
            row["dropout_reason"] = dropout_reason
            row["persuasions"] = [
                {
                    "_id": maker.uuid(),
                    "visit_date": maker.date_text(maker.today - timedelta(days=rng.randint(3, 40))),
                    "visited_by": "驻村工作队 " + rng.choice(SURNAMES) + "某",
                    "result": "劝返中",
                }
            ]
        else:
            row["schooling"] = schooling or "已完成义务教育"
        groups = []
        if parents_away:
            groups.append("留守儿童")
        if "残疾" in person.health:
            groups.append("残疾儿童")
            row["disability_placement"] = rng.choice(["随班就读", "特殊教育学校", "送教上门"])
        row["special_groups"] = groups
        children.append(row)
    return {"survey_date": maker.date_text(maker.today), "children": children}


def _medical(
    maker: _Maker, people: list[_Person], flags: list[str], *, uninsured: bool = False
) -> dict[str, Any]:
    rng = maker.rng
    rows = []
    # A member missing from the list is how an uninsured person shows: the instrument refuses a
    # row with neither insurance, so the household indicator finds them through the roster.
    for person in people[:-1] if uninsured else people:
        employee = person.labour == "技能劳动力" and rng.random() < 0.3
        resident = not employee
        row: dict[str, Any] = {
            "_id": maker.uuid(),
            "name": person.name,
            "id_number": person.id_number,
            "resident_insurance": resident,
            "employee_insurance": employee,
            "critical_illness": resident or employee,
            "commercial_insurance": rng.random() < 0.12,
            "medical_assistance": "农村低保户" in flags and person.health != ["健康"],
        }
        if resident:
            category = "低保" if "农村低保户" in flags else "无"
            if "残疾" in person.health and rng.random() < 0.5:
                category = "重度残疾"
            subsidy = {"无": 0.0, "低保": 200.0, "重度残疾": 400.0}[category]
            row["subsidy_category"] = category
            row["personal_payment"] = 400.0 - subsidy
            row["premium_subsidy"] = subsidy
        rows.append(row)
    sick = sum(1 for p in people if p.health != ["健康"])
    return {
        "members": rows,
        "eligible_out_of_pocket": float(sick * rng.randint(300, 4000)),
    }


def _monitoring(
    maker: _Maker,
    people: list[_Person],
    household_type: str,
    medical_cost: float,
    *,
    line: float,
    category: str | None = None,
    below_line: bool = False,
) -> dict[str, Any]:
    rng = maker.rng
    workers = [p for p in people if p.work_months]
    wages = float(sum((p.work_months or 0) * rng.randint(2800, 5500) for p in workers))
    size = len(people)
    business = float(rng.randint(1500, 16000))
    costs = round(business * rng.uniform(0.2, 0.4), 2)
    data: dict[str, Any] = {
        "household_type": household_type,
        "member_count": size,
        "wage_income": wages,
        "business_income": business,
        "property_income": float(rng.choice([0, 0, 300, 800, 1500])),
        "transfer_income": float(
            rng.randint(300, 3000) + 1200 * sum(p.age(maker.today) >= 60 for p in people)
        ),
        "production_costs": costs,
        "insurance_payouts": 0.0,
        "medical_out_of_pocket": medical_cost,
    }
    if category is None:
        weights = {"无": 82, "边缘易致贫户": 8, "突发严重困难户": 4}
        if household_type == "脱贫户":
            weights["脱贫不稳定户"] = 10
        category = rng.choices(list(weights), weights=list(weights.values()))[0]
    net = sum(data[k] for k in INCOME_KEYS) - costs
    if below_line:
        # Scale the household's income down so the per-capita figure sits under the line.
        target = line * rng.uniform(0.55, 0.9) * size
        factor = target / net if net > 0 else 0.0
        for key in ("wage_income", "business_income", "transfer_income"):
            data[key] = round(data[key] * factor, 2)
        data["production_costs"] = round(costs * factor, 2)
    elif category == "无" and net < line * 1.2 * size:
        # A household under the line would be a monitoring object; an ordinary one earns more
        # (farming, livestock, seasonal work), as rural per-capita incomes around 16,000 yuan do.
        data["business_income"] = round(
            data["business_income"] + line * rng.uniform(1.2, 2.2) * size - net, 2
        )
    data["category"] = category
    if category == "无":
        return data
    risks = ["因病"] if medical_cost > 0 else []
    extra = rng.choice(["因学", "因自然灾害", "因意外事故", "因产业失败"])
    if extra not in risks:
        risks.append(extra)
    if any(p.can_work for p in people) and rng.random() < 0.3:
        risks.append("因务工就业不稳")
    data["risks"] = risks
    if "因自然灾害" in risks:
        data["disaster_type"] = rng.choice(["洪涝", "地质", "旱", "气象"])
    data["found_by"] = rng.choice(["自主申报", "干部排查", "部门预警"])
    home_check = maker.today - timedelta(days=rng.randint(60, 540))
    village = home_check + timedelta(days=rng.randint(1, 4))
    notice = village + timedelta(days=rng.randint(1, 3))
    notice_days = rng.choice([5, 5, 7])
    township = notice + timedelta(days=notice_days + rng.randint(0, 2))
    county = township + timedelta(days=rng.randint(1, 5))
    data.update(
        home_check_date=maker.date_text(home_check),
        village_review_date=maker.date_text(village),
        notice_start_date=maker.date_text(notice),
        notice_days=notice_days,
        township_review_date=maker.date_text(township),
        county_approval_date=maker.date_text(county),
    )
    measures = ["健康"] if "因病" in risks else []
    measures += rng.sample(["产业", "就业", "公益岗位", "金融", "综合保障", "社会帮扶"], k=2)
    data["measures"] = measures
    per_capita = (sum(data[k] for k in INCOME_KEYS) - data["production_costs"]) / size
    can_remove = (maker.today - county).days > 120 and per_capita >= line
    if can_remove and any(p.can_work for p in people) and rng.random() < 0.5:
        data["risk_removed"] = True
        data["removal_method"] = "帮扶消除"
        data["removal_date"] = maker.date_text(
            county + timedelta(days=rng.randint(90, (maker.today - county).days))
        )
    else:
        data["risk_removed"] = False
    return data


def sample_household(
    seed: int,
    *,
    village_code: str = DEFAULT_VILLAGE_CODE,
    today: date = DEFAULT_TODAY,
    monitoring_line: float = DEFAULT_MONITORING_LINE,
) -> dict[str, dict[str, Any]]:
    """Return one realistic household's record data for the six built-in instruments.

    Deterministic in ``seed``. ``today`` is the survey date (ages, dates and school years are
    computed from it); ``monitoring_line`` is the line the household's removal decisions respect,
    and should match the ``monitoring_line`` the records are later validated with.
    """
    return _build(seed, village_code, today, monitoring_line)


def _build(
    seed: int,
    village_code: str,
    today: date,
    line: float,
    *,
    grade: str | None = None,
    renovated: bool = True,
    litres: float | None = None,
    dropout_reason: str | None = None,
    uninsured: bool = False,
    category: str | None = None,
    below_line: bool = False,
) -> dict[str, dict[str, Any]]:
    maker = _Maker(seed, village_code, today)
    people = _members(maker)
    if uninsured:
        people.append(
            _make_person(maker, age=0, sex="男", relation="之子", surname=people[0].name[0])
        )
    dropout: _Person | None = None
    if dropout_reason is not None:
        dropout = _make_person(
            maker, age=12, sex="女", relation="之女", surname=people[0].name[0], sick=0.0
        )
        # Out of school: the roster records the level reached instead of current schooling.
        dropout.schooling, dropout.education_level = None, "小学"
        people.append(dropout)
    household_type = "脱贫户" if maker.rng.random() < 0.4 else "普通农户"
    if category == "脱贫不稳定户":
        household_type = "脱贫户"
    roster = _roster(maker, people, household_type)
    medical = _medical(maker, people, roster["low_income_flags"], uninsured=uninsured)
    return {
        "household_roster": roster,
        "housing_safety": _housing(maker, grade=grade, renovated=renovated),
        "drinking_water": _water(maker, litres=litres),
        "compulsory_education": _education(
            maker, people, dropout=dropout, dropout_reason=dropout_reason
        ),
        "medical_insurance": medical,
        "monitoring_household": _monitoring(
            maker,
            people,
            household_type,
            medical["eligible_out_of_pocket"],
            line=line,
            category=category,
            below_line=below_line,
        ),
    }


#: Named problem cases: each validates cleanly yet fails one indicator the county must clear.
PROBLEM_CASES: dict[str, str] = {
    "dangerous_house": "D级危房，拆除重建尚未竣工验收 / D-grade house, rebuild not yet accepted",
    "no_house": "无房户，选址新建尚未竣工验收 / no house, new build not yet accepted",
    "too_little_water": "丰水地区人均日用水15升 / 15 L per person per day in a water-rich area",
    "dropout": "12岁儿童辍学，劝返中 / a 12-year-old out of school, being persuaded back",
    "uninsured": "新生儿未参加基本医保（不在参保名单中） / a newborn not yet insured (not on the list)",
    "below_line": "边缘易致贫户，人均纯收入低于监测线 / marginal household below the monitoring line",
}


def problem_household(
    case: str,
    seed: int = 0,
    *,
    village_code: str = DEFAULT_VILLAGE_CODE,
    today: date = DEFAULT_TODAY,
    monitoring_line: float = DEFAULT_MONITORING_LINE,
) -> dict[str, dict[str, Any]]:
    """Return a household showing the named problem (see ``PROBLEM_CASES``).

    Raises ``UnknownProblemCaseError`` for a case not in ``PROBLEM_CASES``.
    """
    options: dict[str, dict[str, Any]] = {
        "dangerous_house": {"grade": "D", "renovated": False},
        "no_house": {"grade": "无房", "renovated": False},
        "too_little_water": {"litres": 15.0},
        "dropout": {"dropout_reason": "学习困难/厌学"},
        "uninsured": {"uninsured": True},
        "below_line": {"category": "边缘易致贫户", "below_line": True},
    }
    if case not in options:
        raise UnknownProblemCaseError(
            message=f"no sample problem case {case!r}; known: {', '.join(PROBLEM_CASES)}",
            message_zh=f"没有示例问题户 {case!r}",
        )
    return _build(seed, village_code, today, monitoring_line, **options[case])
