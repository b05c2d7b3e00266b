"""Household search on both engines: by number, a member's name, an ID number (normalised),
inside the caller's area only, ID numbers masked for roles that may not see them."""

from __future__ import annotations

import copy

import pytest
from flask import Flask

from forms.instruments.samples import sample_household
from server.errors import Forbidden, ValidationFailed
from server.services import household_search
from server.services.access import Principal
from tests.server.survey_data import store_household

V1, V2, FAR = "530102001201", "530102001202", "530102002301"
COUNTY = Principal(1, "admin", "county_admin", "")
REVIEWER = Principal(2, "reviewer", "township_reviewer", "530102001")


@pytest.fixture
def households(app: Flask) -> dict[str, dict]:
    """Three households (two townships); the second's head ID typed with spaces and a small x."""
    made = {}
    for village, number, seed in [
        (V1, "5301020012010001", 1),
        (V2, "5301020012020002", 2),
        (FAR, "5301020023010003", 3),
    ]:
        household = copy.deepcopy(sample_household(seed, village_code=village))
        roster = household["household_roster"]
        roster["household_no"] = number
        if seed == 2:
            head = roster["members"][0]
            head["id_number"] = "530102 19800101 001x"
        store_household(
            app, {"household_roster": roster}, village_code=village, household_no=number
        )
        made[village] = roster
    return made


def _search(app: Flask, principal: Principal, **query: str) -> household_search.SearchResult:
    with app.app_context():
        return household_search.search(principal, **query)


def test_a_name_finds_the_member_and_its_household(app: Flask, households: dict) -> None:
    head = households[V1]["members"][0]
    found = _search(app, COUNTY, name=head["name"][1:])  # part of the name is enough
    assert (V1, "5301020012010001") in [(h.village_code, h.household_no) for h in found.households]
    match = next(h for h in found.households if h.village_code == V1)
    assert head["name"] in [m.name for m in match.members]
    assert match.members[0].id_number == head["id_number"]  # a county admin sees it whole


def test_an_id_number_matches_on_its_normalised_form_and_is_masked_for_a_reviewer(
    app: Flask, households: dict
) -> None:
    found = _search(app, REVIEWER, id_number="53010219800101001X")
    assert [(h.village_code, h.household_no) for h in found.households] == [
        (V2, "5301020012020002")
    ]
    shown = found.households[0].members[0].id_number
    assert shown.startswith("530102") and "19800101" not in shown and shown.endswith("001x")
    # The full-width spelling a Chinese IME may type is the same number.
    again = _search(app, COUNTY, id_number="５３０１０２１９８００１０１００１ｘ")
    assert len(again.households) == 1 and again.households[0].members[0].id_number == (
        "530102 19800101 001x"
    )


def test_a_reviewer_finds_nothing_of_another_township(app: Flask, households: dict) -> None:
    far_head = households[FAR]["members"][0]
    by_name = _search(app, REVIEWER, name=far_head["name"]).households
    assert FAR not in [h.village_code for h in by_name]
    assert _search(app, COUNTY, name=far_head["name"]).households[0].village_code == FAR
    assert _search(app, REVIEWER, id_number=far_head["id_number"]).households == []
    assert _search(app, REVIEWER, household_no="5301020023").households == []
    with app.app_context(), pytest.raises(Forbidden):
        household_search.search(REVIEWER, area=FAR, name=far_head["name"])


def test_a_household_number_prefix_lists_the_households(app: Flask, households: dict) -> None:
    found = _search(app, COUNTY, household_no="530102001")
    assert [h.household_no for h in found.households] == ["5301020012010001", "5301020012020002"]
    assert _search(app, COUNTY, area=V2, household_no="530102001").households[0].village_code == V2


def test_wildcards_in_a_query_match_only_themselves(app: Flask, households: dict) -> None:
    assert _search(app, COUNTY, name="%").households == []
    assert _search(app, COUNTY, name="_").households == []
    assert _search(app, COUNTY, household_no="%").households == []


@pytest.mark.parametrize(
    ("query", "message"),
    [({}, "请填写户编号、姓名或身份证号"), ({"id_number": "5301"}, "请输入完整的身份证号")],
)
def test_an_empty_or_partial_query_is_refused_in_chinese(
    app: Flask, query: dict[str, str], message: str
) -> None:
    with app.app_context(), pytest.raises(ValidationFailed) as refused:
        household_search.search(COUNTY, **query)
    assert message in refused.value.message_zh
