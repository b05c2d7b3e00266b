"""Housing safety (住房安全有保障) judged from a ``housing_safety`` record.

Its own module because both the indicators (``forms.indicators``) and the household cross-checks
(``forms.household``) build on it, and ``forms.indicators`` builds on the cross-checks too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HousingResult", "housing_indicator"]


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


@dataclass(frozen=True)
class HousingResult:
    """Whether the household's housing is safe, and the stable reason code for the verdict.

    Reasons: ``appraised_safe`` (A/B), ``renovated`` (C/D/no house with accepted renovation),
    ``public_housing`` (保障安全), ``dangerous_house`` (C/D not yet renovated), ``no_house``,
    ``not_appraised`` and ``no_data``.
    """

    safe: bool | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"safe": self.safe, "reason": self.reason}


def housing_indicator(data: Mapping[str, Any] | None) -> HousingResult:
    """Judge a ``housing_safety`` record: safe by appraisal, renovation, or public housing."""
    if not data or _empty(data.get("appraisal_grade")):
        return HousingResult(None, "no_data")
    grade = data["appraisal_grade"]
    if grade in ("A", "B"):
        return HousingResult(True, "appraised_safe")
    if data.get("safety_basis") == "保障安全":
        return HousingResult(True, "public_housing")
    if grade in ("C", "D", "无房"):
        if data.get("renovation_accepted") is True:
            return HousingResult(True, "renovated")
        return HousingResult(False, "no_house" if grade == "无房" else "dangerous_house")
    return HousingResult(None, "not_appraised")
