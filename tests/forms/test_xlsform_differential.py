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
from xml.etree import ElementTree

import pytest
from pyxform.errors import PyXFormError
from pyxform.xls2json_backends import md_table_to_workbook
from pyxform.xls2xform import convert

from forms.instruments import BUILTIN_IDS
from forms.validation import validate_record
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
    assert ours_count["refused"] == 2 * (4 + len(KNOWN_GAPS))
    assert ours_count["imported"] == len(BUILTIN_IDS)


# --- records: what pyxform's XForm accepts validates here ----------------------------------

_XF = "{http://www.w3.org/2002/xforms}"
_SHA = "sha256:" + "0" * 64
#: A value the XForm accepts for each bind type (time and dateTime as ODK Collect writes them).
_XFORM_VALUES = {
    "int": "3",
    "decimal": "2.5",
    "string": "文本",
    "date": "2026-11-25",
    "time": "06:30:00.000+08:00",
    "dateTime": "2026-11-25T08:30:00.000+08:00",
    "geopoint": "25.1 102.7 1900 5",
    "geotrace": "25.1 102.7 1900 5;25.2 102.8 1910 5",
    "geoshape": "25.1 102.7 0 0;25.2 102.7 0 0;25.2 102.8 0 0;25.1 102.7 0 0",
}


def xform_record(xform: str) -> dict[str, str]:
    """One record the XForm accepts, in its own value spellings: every top-level question
    whose bind has no relevance, constraint or calculation gets a value of its bind type (a
    select the first item of its list, a rank every item, an upload a content address, as our
    tablets record attachments); a filtered itemset (a choice_filter) takes its first item
    only when nothing filters it yet."""
    root = ElementTree.fromstring(xform)
    model = root.find(f".//{_XF}model")
    assert model is not None
    instances = {
        i.get("id"): [item.findtext(f"{_XF}name") for item in i.iter(f"{_XF}item")]
        for i in model.findall(f"{_XF}instance")
        if i.get("id")
    }
    binds = {b.get("nodeset"): b for b in model.findall(f"{_XF}bind")}
    body = root.find("{http://www.w3.org/1999/xhtml}body")
    assert body is not None
    record: dict[str, str] = {}
    for control in body:
        ref = control.get("ref") or ""
        parts = ref.split("/")
        bind = binds.get(ref)
        if len(parts) != 3 or bind is None:
            continue  # groups, repeats, metadata: generated elsewhere
        if any(bind.get(a) for a in ("relevant", "constraint", "calculate", "readonly")):
            continue
        tag = control.tag.split("}")[-1]
        itemset = control.find(f"{_XF}itemset")
        items = [i.findtext(f"{_XF}value") for i in control.findall(f"{_XF}item")]
        if itemset is not None:
            nodeset = itemset.get("nodeset") or ""
            list_id = nodeset.split("'")[1]
            items = instances.get(list_id, []) if "[" not in nodeset else []
        if tag in ("select1", "select") and items:
            record[parts[2]] = items[0]
        elif tag == "rank" and items:
            record[parts[2]] = " ".join(reversed(items))
        elif tag == "upload":
            record[parts[2]] = _SHA
        elif tag == "input" and bind.get("type", "string").split(":")[-1] in _XFORM_VALUES:
            record[parts[2]] = _XFORM_VALUES[bind.get("type", "string").split(":")[-1]]
    return record


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_a_record_pyxform_s_xform_accepts_validates_here(name: str) -> None:
    data = CORPUS[name].encode("utf-8")
    try:
        xform = convert(xlsform=data, file_type=".md").xform
        defn = read_xlsform(data, f"{name}.md", ATTACHMENTS).definition
    except (PyXFormError, XLSFormError):
        pytest.skip("refused by pyxform or, for a listed reason, here")
    try:
        record = xform_record(xform)
    except ElementTree.ParseError:
        # a name with ':' (building:material) is an undeclared XML prefix in the XForm itself
        pytest.skip("the XForm is not namespace-well-formed XML")
    # our names are lower-case with '_' where ODK's are not (renamed at import, warned)
    ours = {f.name.lower(): f.name for f in defn.fields}
    record = {
        ours.get(k.lower().replace("-", "_").replace(".", "_"), k): v for k, v in record.items()
    }
    errors = [e for e in validate_record(defn, record).errors if e.path in record]
    assert not errors, (record, [e.to_dict() for e in errors])


def test_the_xform_records_reach_every_question_type() -> None:
    # guards the differential above against generating nothing
    filled = set()
    for md in CORPUS.values():
        try:
            xform = convert(xlsform=md.encode(), file_type=".md").xform
            filled.update(xform_record(xform))
        except (PyXFormError, ElementTree.ParseError):
            continue
    assert {"woke", "visited", "voice", "path", "field", "needs", "age", "photo"} <= filled
