"""Small hand-made form definitions shared by the core form-engine tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

HOUSING_V1: dict[str, Any] = {
    "id": "housing_mini",
    "version": 1,
    "title": {"zh": "住房安全（测试）", "en": "Housing (test)"},
    "fields": [
        {"name": "head_name", "type": "text", "label": {"zh": "户主姓名", "en": "Head"}},
        {
            "name": "build_year",
            "type": "integer",
            "label": {"zh": "建房年份"},
            "constraint": ". >= 1900 and . <= year(today())",
            "constraint_message": {"zh": "年份应在1900年至今年之间", "en": "Year 1900..this year"},
        },
        {"name": "has_house", "type": "boolean", "label": {"zh": "是否有房"}, "required": True},
        {
            "name": "grade",
            "type": "select_one",
            "label": {"zh": "鉴定等级"},
            "choices": "grade",
            "relevant": "${has_house} = true()",
            "required": True,
            "merge": "review",
        },
        {
            "name": "method",
            "type": "select_one",
            "label": {"zh": "改造方式"},
            "choices": "method",
            "relevant": "${grade} = 'C' or ${grade} = 'D'",
        },
        {"name": "subsidy", "type": "decimal", "label": {"zh": "补助资金"}, "unit": "元"},
        {"name": "visited", "type": "date", "label": {"zh": "走访日期"}},
        {"name": "photo", "type": "image", "label": {"zh": "房屋照片"}},
        {"name": "location", "type": "geopoint", "label": {"zh": "位置"}},
        {
            "name": "issues",
            "type": "select_multiple",
            "label": {"zh": "问题"},
            "choices": "issue",
        },
        {
            "name": "members",
            "type": "repeat",
            "label": {"zh": "家庭成员"},
            "min_rows": 1,
            "max_rows": 20,
            "fields": [
                {"name": "name", "type": "text", "label": {"zh": "姓名"}, "required": True},
                {
                    "name": "id_number",
                    "type": "text",
                    "label": {"zh": "身份证号"},
                    "sensitive": True,
                },
                {
                    "name": "age",
                    "type": "integer",
                    "label": {"zh": "年龄"},
                    "constraint": ". >= 0 and . <= 130",
                },
                {
                    "name": "schooling",
                    "type": "text",
                    "label": {"zh": "在校情况"},
                    "relevant": "${age} >= 6 and ${age} <= 16",
                },
            ],
        },
        {"name": "member_count", "type": "calculate", "calculate": "count(${members})"},
    ],
    "choice_lists": {
        "grade": [
            {"value": "A", "label": {"zh": "A级", "en": "A"}},
            {"value": "B", "label": "B级"},
            {"value": "C", "label": "C级"},
            {"value": "D", "label": "D级"},
        ],
        "method": [
            {"value": "维修加固", "label": "维修加固"},
            {"value": "拆除重建", "label": "拆除重建"},
        ],
        "issue": [
            {"value": "roof", "label": "屋顶"},
            {"value": "wall", "label": "墙体"},
            {"value": "base", "label": "地基"},
        ],
    },
    "checks": [
        {
            "id": "c_grade_method",
            "severity": "warning",
            "field": "method",
            "rule": "not(${grade} = 'C' and ${method} != '维修加固')",
            "message": {
                "zh": "C级危房一般应维修加固",
                "en": "A C-grade house is normally repaired",
            },
        },
        {
            "id": "c_one_head",
            "severity": "error",
            "field": "members",
            "rule": "count(${members}) >= 1",
            "message": {"zh": "至少一名成员", "en": "At least one member"},
        },
    ],
}


@pytest.fixture
def housing_doc() -> dict[str, Any]:
    """A fresh, mutable copy of the small housing definition document."""
    return copy.deepcopy(HOUSING_V1)
