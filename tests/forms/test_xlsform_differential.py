"""Differential: every form ODK's converter (pyxform, its own reader on the same bytes) accepts
imports here, or is refused for a reason on the listed refuse list (or is a pinned known gap,
``KNOWN_GAPS``); what pyxform refuses, we refuse too.

Corpus: the Markdown forms of tests/forms/xlsform_corpus.py, each also saved as .xlsx, and the
six built-in instruments' shipped workbooks, and one Excel 97 .xls. ``test_corpus_counts`` prints the counts for the
close note of issue 19 (run with ``-s``) and pins them.
"""

from __future__ import annotations

import io
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
from pyxform.errors import PyXFormError
from pyxform.xls2json_backends import md_table_to_workbook
from pyxform.xls2xform import convert

from forms.instruments import BUILTIN_IDS
from forms.xlsform import XLSFormError, read_xlsform
from tests.forms.xlsform_corpus import ATTACHMENTS, CORPUS, KNOWN_GAPS, LISTED_REFUSALS


def corpus_files() -> list[tuple[str, bytes, str]]:
    files = []
    for name, md in CORPUS.items():
        files.append((f"{name}.md", md.encode("utf-8"), ".md"))
        buf = io.BytesIO()
        md_table_to_workbook(md).save(buf)
        files.append((f"{name}.xlsx", buf.getvalue(), ".xlsx"))
    fixture = Path(__file__).parent / "fixtures" / "legacy_excel97.xls"
    files.append((fixture.name, fixture.read_bytes(), ".xls"))
    shipped = resources.files("forms.instruments").joinpath("xlsx")
    for form_id in BUILTIN_IDS:
        files.append((f"{form_id}.xlsx", shipped.joinpath(f"{form_id}.xlsx").read_bytes(), ".xlsx"))
    return files


FILES = corpus_files()


def pyxform_accepts(data: bytes, file_type: str) -> bool:
    try:
        convert(xlsform=data, file_type=file_type)
    except PyXFormError:
        return False
    return True


def ours(data: bytes, filename: str) -> tuple[str, set[str]]:
    """("imported" | "warned" | "refused", codes)."""
    try:
        result = read_xlsform(data, filename, ATTACHMENTS)
    except XLSFormError as exc:
        return "refused", {i.code for i in exc.issues}
    if result.warnings:
        return "warned", {w.code for w in result.warnings}
    return "imported", set()


@pytest.mark.parametrize(("filename", "data", "file_type"), FILES, ids=[f[0] for f in FILES])
def test_what_pyxform_converts_imports_here_or_is_refused_for_a_listed_reason(
    filename: str, data: bytes, file_type: str
) -> None:
    outcome, codes = ours(data, filename)
    gap = KNOWN_GAPS.get(filename.rpartition(".")[0])
    if gap is not None:
        assert pyxform_accepts(data, file_type) and (outcome, codes) == ("refused", gap)
    elif pyxform_accepts(data, file_type):
        assert outcome != "refused" or codes <= LISTED_REFUSALS, codes
    else:
        assert outcome == "refused"


def test_our_exports_are_odk_xlsforms_pyxform_converts() -> None:
    for form_id in BUILTIN_IDS:
        data = resources.files("forms.instruments").joinpath(f"xlsx/{form_id}.xlsx").read_bytes()
        assert pyxform_accepts(data, ".xlsx"), form_id
        assert ours(data, f"{form_id}.xlsx") == ("imported", set())


def test_corpus_counts() -> None:
    ours_count: Counter[str] = Counter()
    refused_by: Counter[str] = Counter()
    pyxform_count: Counter[str] = Counter()
    for filename, data, file_type in FILES:
        outcome, codes = ours(data, filename)
        ours_count[outcome] += 1
        if outcome == "refused":
            refused_by.update(codes)
        pyxform_count["converted" if pyxform_accepts(data, file_type) else "refused"] += 1
    print(
        f"\nforms tried: {len(FILES)}; ours: {dict(ours_count)}; refused by reason: "
        f"{dict(refused_by)}; pyxform: {dict(pyxform_count)}"
    )
    assert len(FILES) == 2 * len(CORPUS) + 1 + len(BUILTIN_IDS)
    assert dict(pyxform_count) == {"converted": len(FILES) - 4, "refused": 4}
    assert ours_count["refused"] == 2 * (5 + len(KNOWN_GAPS))
    assert ours_count["imported"] == len(BUILTIN_IDS)
