"""The six built-in survey instruments and the system forms, shipped as JSON definition documents
(contracts §1).

Each instrument is grounded field by field in the official criteria (see docs/instruments.md).
The JSON files next to this module are the source; this module only finds, parses and caches them.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from forms.definition import FormDefinition, load_definition
from forms.errors import FormsError

__all__ = [
    "BUILTIN_IDS",
    "EDUCATION",
    "HOUSING",
    "INSURANCE",
    "MONITORING",
    "ROSTER",
    "SYSTEM_IDS",
    "VERIFICATION_OUTCOME",
    "WATER",
    "UnknownInstrumentError",
    "builtin_definitions",
    "builtin_json",
    "load_builtin",
]

#: The ids of the built-in instruments, named once: the indicators and the household
#: cross-checks look records up by them.
ROSTER = "household_roster"
HOUSING = "housing_safety"
WATER = "drinking_water"
EDUCATION = "compulsory_education"
INSURANCE = "medical_insurance"
MONITORING = "monitoring_household"

#: The built-in instruments, household core first, in the order a team usually fills them.
BUILTIN_IDS: tuple[str, ...] = (ROSTER, HOUSING, WATER, EDUCATION, INSURANCE, MONITORING)
#: The outcome of a verification task worked on the tablet (issue 17): not a survey instrument
#: a team picks, but a form the server publishes with the others so the outcome travels as an
#: ordinary record (merge, conflicts and acks as for any record).
VERIFICATION_OUTCOME = "verification_outcome"
#: Forms the server needs besides the survey instruments, published with them.
SYSTEM_IDS: tuple[str, ...] = (VERIFICATION_OUTCOME,)


class UnknownInstrumentError(FormsError, KeyError):
    """No built-in instrument has the requested id."""

    code = "unknown_instrument"
    default_message = "no built-in instrument has this id"
    default_message_zh = "没有这个内置调查表"

    def __str__(self) -> str:
        # KeyError would repr() the message; keep the readable form.
        return f"[{self.code}] {self.message}"


@cache
def _document(form_id: str) -> dict[str, Any]:
    if form_id not in BUILTIN_IDS and form_id not in SYSTEM_IDS:
        known = ", ".join((*BUILTIN_IDS, *SYSTEM_IDS))
        raise UnknownInstrumentError(
            message=f"no built-in instrument {form_id!r}; known: {known}",
            message_zh=f"没有内置调查表 {form_id!r}",
        )
    text = resources.files(__package__).joinpath(f"{form_id}.json").read_text(encoding="utf-8")
    return json.loads(text)


def builtin_json(form_id: str) -> dict[str, Any]:
    """Return a fresh copy of the JSON document of a built-in instrument (safe to modify).

    Raises ``UnknownInstrumentError`` for an id not in ``BUILTIN_IDS``.
    """
    return copy.deepcopy(_document(form_id))


@cache
def load_builtin(form_id: str) -> FormDefinition:
    """Return the parsed (immutable, cached) definition of a built-in instrument.

    Raises ``UnknownInstrumentError`` for an id not in ``BUILTIN_IDS``; a ``FormDefinitionError``
    here would mean a broken release, which the test suite rules out.
    """
    return load_definition(_document(form_id))


def builtin_definitions() -> list[FormDefinition]:
    """Return every built-in instrument, in ``BUILTIN_IDS`` order."""
    return [load_builtin(form_id) for form_id in BUILTIN_IDS]
