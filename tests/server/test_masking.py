"""The records view masks nested data in one walk (``mask_data``); it must mask exactly what the
flat rule does over ``flatten`` → ``mask_flat`` → ``unflatten``, the path it replaced."""

from __future__ import annotations

import pytest

from forms import FormsError, flatten, unflatten
from forms.instruments import BUILTIN_IDS, load_builtin
from forms.instruments.samples import sample_household
from server.services.masking import MASK, Sensitivity, mask_data, mask_flat


def _sensitivity(form_id: str) -> Sensitivity:
    # The real rule over the built-in definition, without the database lookup of its versions.
    sensitive = Sensitivity.__new__(Sensitivity)
    sensitive.definitions = [load_builtin(form_id)]
    return sensitive


@pytest.mark.parametrize("form_id", BUILTIN_IDS)
def test_one_walk_masks_what_flatten_mask_unflatten_masks(form_id: str) -> None:
    sensitive = _sensitivity(form_id)
    changed = 0
    for seed in range(25):
        data = sample_household(seed)[form_id]
        masked = mask_data(sensitive, data)
        assert masked == unflatten(mask_flat(sensitive, flatten(data))), seed
        changed += masked != data
    has_sensitive = bool(load_builtin(form_id).sensitive_paths())
    assert (changed > 0) == has_sensitive, form_id


def test_repeat_rows_keep_ids_and_order_while_their_id_numbers_are_masked() -> None:
    data = sample_household(3)["household_roster"]
    masked = mask_data(_sensitivity("household_roster"), data)
    assert [row["_id"] for row in masked["members"]] == [row["_id"] for row in data["members"]]
    for before, after in zip(data["members"], masked["members"], strict=True):
        if before.get("id_number"):
            assert after["id_number"] != before["id_number"]
            assert after["id_number"][:6] == before["id_number"][:6]
        assert after["name"] == before["name"]


def test_unknown_form_masks_every_value_and_a_bad_row_is_refused_like_flatten() -> None:
    nothing_known = Sensitivity.__new__(Sensitivity)
    nothing_known.definitions = []
    assert mask_data(nothing_known, {"a": "short", "b": None}) == {"a": MASK, "b": None}
    with pytest.raises(FormsError):
        mask_data(_sensitivity("household_roster"), {"members": [{"name": "x"}]})
