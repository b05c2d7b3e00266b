"""The field app's JS form engine and renderer (server/field/static/forms/), in Chromium.

The engine runs every conformance case of the form engine's checks — the same vectors
tests/sync_protocol runs against Python — so one rule set is proven on both sides; a wrong
answer names its case. The renderer is driven as a person would on a 360 px phone: skip logic,
a violated constraint and its message, repeat rows, a calculation, a right-to-left Uyghur form
and Chinese typed through an input method. Everything is served by a real HTTP server on
loopback (a secure context, as the county server is to a tablet).
"""

from __future__ import annotations

import copy
import json
import random
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from forms.instruments import BUILTIN_IDS, load_builtin
from forms.instruments.samples import sample_household
from tests.sync_protocol.conformance import VECTOR_DIR, _same, load_cases
from tests.sync_protocol.conformance_python import answer

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "field"
#: URL prefix → directory the test server serves (nothing else is reachable).
SERVED = {
    "/static/": ROOT / "server" / "field" / "static",
    "/vectors/": ROOT / "sync_protocol" / "vectors",
    "/instruments/": ROOT / "forms" / "instruments",
    "/support/": ROOT / "tests" / "web",
}
#: The conformance checks that are the form engine's (records.json).
FORM_CHECKS = (
    "paths.flatten",
    "expression.evaluate",
    "record.validate",
    "record.prefill",
    "household.indicators",
)
HARNESS = b"""<!doctype html><html lang="zh"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>forms</title><style>body{margin:0;font-family:sans-serif}</style></head>
<body><main id="form"></main></body></html>"""


class _Handler(SimpleHTTPRequestHandler):
    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        for prefix, directory in SERVED.items():
            if path.startswith(prefix):
                target = (directory / path[len(prefix) :]).resolve()
                if target.is_relative_to(directory):
                    return str(target)
        return str(ROOT / "does-not-exist")

    def do_GET(self) -> None:
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(HARNESS)))
            self.end_headers()
            self.wfile.write(HARNESS)
            return
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(ROOT)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def page(chromium: Any, base_url: str) -> Iterator[Any]:
    context = chromium.new_context(
        viewport={"width": 360, "height": 780}, device_scale_factor=1, locale="zh-CN"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base_url + "/")
    yield page
    context.close()
    assert errors == [], errors


#: The built-in instruments the vectors validate against (the device holds them as documents).
INSTRUMENTS = sorted(p.stem for p in (ROOT / "forms" / "instruments").glob("*.json"))
RUN_VECTORS = """async ([checks, instruments]) => {
  const engine = await import("/static/forms/engine.js");
  const { conformanceAnswer } = await import("/support/field_forms_conformance.js");
  const doc = await (await fetch("/vectors/conformance/records.json")).json();
  const definitions = {};
  for (const id of instruments) definitions[id] = await (await fetch(`/instruments/${id}.json`)).json();
  const answers = {};
  for (const c of doc.cases) {
    if (checks.includes(c.check)) answers[c.id] = conformanceAnswer(engine, c.check, c.input, definitions);
  }
  return answers;
}"""


#: Values people and spreadsheets put where they do not belong.
_JUNK = [
    None,
    "",
    "abc",
    "１２",
    12,
    1.5,
    -3,
    True,
    [],
    ["a"],
    {"lat": 1},
    "2026-02-30",
    "2099-01-01",
    "53010219800101002X",
    "12 13",
    "C",
    "无房",
    "无",
    0,
    "sha256:" + "A" * 64,
]


def _spoiled(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A record with a few answers replaced by junk, removed, added, or rows copied."""
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 6)):
        roll, keys = rng.random(), sorted(data)
        repeats = [
            k
            for k in keys
            if isinstance(data[k], list) and data[k] and isinstance(data[k][0], dict)
        ]
        if roll < 0.4 and keys:
            data[rng.choice(keys)] = rng.choice(_JUNK)
        elif roll < 0.6 and keys:
            data.pop(rng.choice(keys))
        elif roll < 0.7:
            data["surveyor_note"] = rng.choice(_JUNK)
        elif repeats:
            rows = data[rng.choice(repeats)]
            row = rng.choice(rows)
            row[rng.choice(sorted(row))] = rng.choice(_JUNK)
            if rng.random() < 0.3:
                rows.append(copy.deepcopy(row))
    return data


def _differential_cases(seed: int, households: int) -> list[dict[str, Any]]:
    """Spoiled records of sample households, answered by the Python engines."""
    rng = random.Random(seed)
    cases = []
    monitoring = {"monitoring_lines": {"53": {"2026": 8700.0}}}
    for number in range(1, households + 1):
        records = sample_household(number)
        form_id = rng.choice(sorted(records))
        data = _spoiled(records[form_id], rng)
        record = {
            "form_id": form_id,
            "form_version": load_builtin(form_id).version,
            "today": "2026-11-25",
            "config": {"monitoring_line": 8700.0, "water_region_type": "water_rich"},
            "data": data,
        }
        picture = {
            "records": {**records, form_id: data},
            "village_code": "530102001201",
            "year": 2026,
            "monitoring": monitoring,
            "on": "2026-11-25",
        }
        for check, given in (("record.validate", record), ("household.indicators", picture)):
            cases.append(
                {
                    "id": f"{check}-{number}",
                    "check": check,
                    "input": given,
                    "expect": answer(check, given),
                }
            )
    return cases


#: A form of the XLSForm field types and features the built-in instruments do not use.
NEW_TYPES_FORM = {
    "id": "new_types",
    "version": 1,
    "title": "新题型",
    "fields": [
        {"name": "county", "type": "select_one", "label": "县", "choices": "county"},
        {
            "name": "town",
            "type": "select_one",
            "label": "乡",
            "choices": "town",
            "choice_filter": "choice('county') = ${county}",
        },
        {"name": "size", "type": "integer", "label": "人数", "default": "2"},
        {"name": "start", "type": "time", "label": "开始时间"},
        {"name": "visited", "type": "datetime", "label": "走访时间"},
        {"name": "interview", "type": "audio", "label": "录音"},
        {"name": "tour", "type": "video", "label": "视频"},
        {"name": "scan", "type": "file", "label": "文件"},
        {"name": "path", "type": "geotrace", "label": "路线"},
        {"name": "plot", "type": "geoshape", "label": "地块"},
        {"name": "needs", "type": "rank", "label": "需求排序", "choices": "need"},
        {
            "name": "members",
            "type": "repeat",
            "label": "成员",
            "repeat_count": "${size}",
            "fields": [
                {"name": "mname", "type": "text", "label": "姓名", "default": "'未填'"},
                {"name": "row_no", "type": "calculate", "calculate": "position()"},
            ],
        },
        {
            "name": "first",
            "type": "calculate",
            "calculate": "indexed-repeat(${mname}, ${members}, 1)",
        },
        {
            "name": "town_name",
            "type": "calculate",
            "calculate": "jr:choice-name(${town}, '${town}')",
        },
    ],
    "choice_lists": {
        "county": [{"value": "c1", "label": "一县"}, {"value": "c2", "label": "二县"}],
        "town": [
            {"value": "t1", "label": "一乡", "filters": {"county": "c1"}},
            {"value": "t2", "label": "二乡", "filters": {"county": "c2"}},
        ],
        "need": [
            {"value": "water", "label": "饮水"},
            {"value": "road", "label": "道路"},
            {"value": "school", "label": "上学"},
        ],
    },
}
NEW_TYPES_RECORD = {
    "county": "c1",
    "town": "t1",
    "size": 2,
    "start": "08:30",
    "visited": "2026-11-25T08:30:00+08:00",
    "interview": "sha256:" + "b" * 64,
    "tour": "sha256:" + "C" * 64,
    "scan": "sha256:" + "d" * 64,
    "path": "25.04 102.71;25.05 102.72 1900 5",
    "plot": [{"lat": 25.0, "lon": 102.0}, "25.1 102.0", "25.1 102.1", {"lat": 25.0, "lon": 102.0}],
    "needs": "road water",
    "members": [{"_id": "r1", "mname": "甲"}, {"_id": "r2"}],
}
#: Values the new field types must refuse or read exactly as Python does.
_NEW_TYPE_JUNK = [
    "24:00",
    "08:60",
    " 23:59:59.5Z ",
    "08:30+0800",
    "8:30",
    "2026-02-30T08:00",
    "2026-11-25 23:59",
    "2026-11-25T08:30Z",
    "2026-11-25T08:30:00.1234567",
    "2026-11-25T08:30+08:30:15.5",
    "2026-11-25T08:30+24:00",
    "2026-11-25T08:30+08:60",
    "2026-11-25T08:30+0830:15",
    "2026-11-25",
    "25.0 102.0",
    "25.0 102.0;95 102",
    "２５ １０２;25 102.5",
    "nan 102;25 102",
    "2_5 102;25 102",
    [{"lat": 1, "lon": 2}, {"lat": 1, "lon": 2}, {"lat": 3, "lon": 2}],
    "water water",
    ["school", 1],
    "t2",
    "c2",
    "３",
    "sha256:" + "z" * 64,
]


def _new_type_cases(seed: int, count: int) -> list[dict[str, Any]]:
    """Spoiled records of NEW_TYPES_FORM (validation and prefill), answered by Python."""
    rng = random.Random(seed)
    records = []
    for key in sorted(NEW_TYPES_RECORD):  # every field with every value meant for the new types
        if key != "members":
            records.extend({**NEW_TYPES_RECORD, key: junk} for junk in _NEW_TYPE_JUNK)
    for _ in range(count):  # and a few spoiled at random
        data = copy.deepcopy(NEW_TYPES_RECORD)
        for _ in range(rng.randint(1, 4)):
            key = rng.choice(sorted(data))
            if rng.random() < 0.2:
                data.pop(key)
            else:
                data[key] = rng.choice(_NEW_TYPE_JUNK + _JUNK)
        records.append(data)
    cases = []
    for number, data in enumerate(records):
        given = {
            "definition": NEW_TYPES_FORM,
            "form_id": "new_types",
            "form_version": 1,
            "today": "2026-11-25",
            "config": {},
            "data": data,
        }
        for check in ("record.validate", "record.prefill"):
            cases.append(
                {
                    "id": f"{check}-new-types-{number}",
                    "check": check,
                    "input": given,
                    "expect": answer(check, given),
                }
            )
    return cases


#: Edge cases of the XLSForm functions beyond the vectors, each with and without a row, a
#: tested choice, choice labels and a data table around it.
_XLSFORM_EXPRESSIONS = [
    "position()",
    "indexed-repeat(${n}, ${rows}, 2)",
    "indexed-repeat(${n}, ${rows}, '1')",
    "indexed-repeat(${n}, ${rows}, 0)",
    "indexed-repeat(${n}, ${rows}, 1.5)",
    "indexed-repeat(${n}, ${x}, 1)",
    "indexed-repeat(1, ${rows}, 1)",
    "pulldata('t', 'v', 'k', 1)",
    "pulldata('t', 'v', 'k', ${x})",
    "pulldata('t', 'w', 'k', 2)",
    "pulldata(${x}, 'v', 'k', 1)",
    "jr:choice-name(${x}, ' ${c} ')",
    "jr:choice-name(3, 'c')",
    "jr:choice-name(${x}, 'nofield')",
    "jr:choice-name-(${x}, 'c')",
    "jr : choice-name(1, 2)",
    "jr:x()",
    "choice('name')",
    "choice(1)",
    "choice('county')",
    "concat(jr:choice-name(${x}, 'c'), position())",
]


def _expression_cases() -> list[dict[str, Any]]:
    base = {
        "values": {"x": "3", "rows": [{"n": 5}, {"n": "7"}], "c": "3"},
        "current": None,
        "today": "2026-11-25",
        "config": {},
    }
    around = {
        "rows": [{"repeat": "rows", "row": {"n": "7"}}],
        "choice": {"name": "a", "county": ""},
        "labels": {"c": {"3": "三"}},
        "tables": {"t": [{"k": "1", "v": "12.5", "w": ""}, {"k": "3", "v": "x"}]},
    }
    cases = []
    for number, text in enumerate(_XLSFORM_EXPRESSIONS):
        for extra in ({}, around):
            given = {**base, "expression": text, **extra}
            cases.append(
                {
                    "id": f"expression-xlsform-{number}-{bool(extra)}",
                    "check": "expression.evaluate",
                    "input": given,
                    "expect": answer("expression.evaluate", given),
                }
            )
    return cases


RUN_CASES = """async ([cases, instruments]) => {
  const engine = await import("/static/forms/engine.js");
  const { conformanceAnswer } = await import("/support/field_forms_conformance.js");
  const definitions = {};
  for (const id of instruments) definitions[id] = await (await fetch(`/instruments/${id}.json`)).json();
  return cases.map((c) => conformanceAnswer(engine, c.check, c.input, definitions));
}"""


def test_the_js_engine_answers_every_form_vector_as_python_does(page: Any) -> None:
    cases = [c for c in load_cases(VECTOR_DIR) if c["check"] in FORM_CHECKS]
    assert {c["check"] for c in cases} == set(FORM_CHECKS)
    answers = page.evaluate(RUN_VECTORS, [list(FORM_CHECKS), INSTRUMENTS])
    failed = [
        f"{c['id']}: expected {json.dumps(c['expect'], ensure_ascii=False)[:600]}\n"
        f"   got {json.dumps(answers.get(c['id']), ensure_ascii=False)[:600]}"
        for c in cases
        if not _same(c["expect"], answers.get(c["id"]))
    ]
    assert failed == [], f"{len(failed)} of {len(cases)} cases failed:\n" + "\n".join(failed)
    assert len(cases) >= 180

    # No eval: an expression is a tree; names that are JavaScript's own mean nothing in it.
    out = page.evaluate(
        """async () => {
          const e = await import("/static/forms/engine.js");
          const refused = (text) => { try { e.parseExpression(text); return null; }
                                      catch (x) { return [x.code, x.position]; } };
          return {
            tree: e.parseExpression("1 + 2 * ${a}").root.type,
            calls: refused("constructor('alert(1)')"),
            proto: refused("${__proto__}.x"),
            value: e.evaluate("${__proto__}", {values: {}}),
            digits: e.validateRecord(await (await fetch("/instruments/housing_safety.json")).json(),
                                     {build_year: "530102198001010024"}).cleaned.build_year,
          };
        }"""
    )
    assert out["tree"] == "binary"
    assert out["calls"] == ["unknown_function", 0]
    assert out["proto"] == ["unexpected_token", 12]  # as forms/expressions.py answers
    assert out["value"] is None
    # Digits beyond what a JavaScript number holds are kept as typed, never replaced.
    assert out["digits"] == "530102198001010024"

    # Beyond the vectors: spoiled records of forty sample households, judged by both engines.
    cases = _differential_cases(seed=15, households=40)
    answers = page.evaluate(RUN_CASES, [cases, INSTRUMENTS])
    differ = [c["id"] for c, got in zip(cases, answers, strict=True) if not _same(c["expect"], got)]
    assert differ == []

    # The new field types, choice_filter, repeat_count and defaults on spoiled answers, and
    # the XLSForm functions' edge cases.
    cases = _new_type_cases(seed=19, count=40) + _expression_cases()
    answers = page.evaluate(RUN_CASES, [cases, INSTRUMENTS])
    differ = [
        f"{c['id']}: {json.dumps(c['input']['data'], ensure_ascii=False)}\n"
        f"   expected {json.dumps(c['expect'], ensure_ascii=False)[:600]}\n"
        f"   got {json.dumps(got, ensure_ascii=False)[:600]}"
        for c, got in zip(cases, answers, strict=True)
        if not _same(c["expect"], got)
    ]
    assert differ == [], "\n".join(differ)


#: The housing instrument plus one labelled calculation (it has none of its own to show).
SHOW_HOUSING = """async ([language, extra]) => {
  const { renderForm } = await import("/static/forms/render.js");
  const doc = await (await fetch("/instruments/housing_safety.json")).json();
  doc.fields.push(...extra);
  window.changes = [];
  window.form = renderForm(document.getElementById("form"), doc, {
    language, today: "2026-11-25", onChange: (values) => window.changes.push(values),
  });
  await new Promise((resolve) => requestAnimationFrame(resolve));
}"""
AREA_PER_STOREY = {
    "name": "area_per_storey",
    "type": "calculate",
    "label": {"zh": "每层面积", "en": "Area per storey"},
    "calculate": "round(${floor_area} div ${storeys}, 1)",
}
#: A small form written in Uyghur (zh is always required): a right-to-left page.
UYGHUR_FORM = {
    "id": "ug_probe",
    "version": 1,
    "title": {"zh": "饮水情况", "ug": "ئىچىملىك سۇ ئەھۋالى"},
    "fields": [
        {
            "name": "source",
            "type": "select_one",
            "label": {"zh": "水源", "ug": "سۇ مەنبەسى"},
            "choices": "source",
            "required": True,
        },
        {
            "name": "litres",
            "type": "decimal",
            "label": {"zh": "每人每天用水量", "ug": "ھەر بىر ئادەمنىڭ كۈندىلىك سۇ مىقدارى"},
            "hint": {"zh": "升", "ug": "لىتىر"},
            "constraint": ". > 0",
        },
    ],
    "choice_lists": {
        "source": [
            {"value": "piped", "label": {"zh": "自来水", "ug": "تۇرۇبا سۇيى"}},
            {"value": "well", "label": {"zh": "井水", "ug": "قۇدۇق سۇيى"}},
        ]
    },
}


def _visible(page: Any, path: str) -> bool:
    return page.locator(f'[data-path="{path}"]').first.is_visible()


def _layout_problems(page: Any, width: int) -> dict[str, Any]:
    """Elements wider than the screen, and touch targets smaller than 44 px."""
    return page.evaluate(
        """(width) => {
          const wide = [...document.querySelectorAll("body *")]
            .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > width + 0.5)
            .map((e) => e.outerHTML.slice(0, 80));
          const small = [...document.querySelectorAll(
              "input:not([type=radio]):not([type=checkbox]), select, button, .vf-choice")]
            .filter((e) => e.getClientRects().length && e.getBoundingClientRect().height < 44)
            .map((e) => e.outerHTML.slice(0, 80));
          return {scroll: document.documentElement.scrollWidth, wide, small};
        }""",
        width,
    )


def test_the_housing_form_on_a_phone(page: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate(SHOW_HOUSING, ["zh", [AREA_PER_STOREY]])
    # Skip logic: nothing graded yet, so no appraisal date and no renovation questions.
    assert not _visible(page, "appraisal_date")
    assert not _visible(page, "renovation_method")
    page.locator('input[name="appraisal_grade"][value="C"]').check()
    assert _visible(page, "appraisal_date") and _visible(page, "renovation_method")
    page.locator('input[name="renovation_method"]').first.check()
    page.locator('input[name="appraisal_grade"][value="无房"]').check()
    assert not _visible(page, "structure") and not _visible(page, "build_year")
    page.locator('input[name="appraisal_grade"][value="A"]').check()
    assert not _visible(page, "renovation_method") and _visible(page, "build_year")
    values = page.evaluate("window.form.values()")
    assert values["appraisal_grade"] == "A" and "renovation_method" not in values

    # A violated constraint: its own Chinese message, shown once the person leaves the field.
    page.fill("#f-build_year", "1800")
    page.locator("#f-build_year").blur()
    message = page.locator('[id="m-build_year"]')
    assert message.inner_text() == "建造年份应在1900年至今年之间"
    assert page.locator("#f-build_year").get_attribute("aria-invalid") == "true"

    # A calculation follows the answers it reads (full-width digits are numbers too).
    page.fill("#f-storeys", "２")
    page.fill("#f-floor_area", "121")
    assert page.locator('[id="f-area_per_storey"]').inner_text() == "60.5"
    assert page.evaluate("window.form.values()")["area_per_storey"] == 60.5

    # A repeat row added, a caption typed in Chinese, then removed again.
    page.click(".vf-repeat .vf-add")
    caption = page.locator('.vf-row input[name$="/caption"]')
    caption.click()
    page.keyboard.insert_text("屋顶有裂缝")
    row = page.evaluate("window.form.values()")["photos"]
    assert len(row) == 1 and row[0]["caption"] == "屋顶有裂缝" and row[0]["_id"]
    page.click(".vf-row .vf-remove")
    assert "photos" not in page.evaluate("window.form.values()")
    assert page.locator(".vf-row").count() == 0
    page.click(".vf-repeat .vf-add")
    page.locator('.vf-row input[name$="/caption"]').fill("东侧墙体")
    page.locator('.vf-row input[name$="/caption"]').blur()
    assert page.locator(".vf-row-title").inner_text() == "第 1 行"
    # Full-page screenshots last: Playwright's resizing leaves the page scrolled oddly.
    page.screenshot(path=str(ARTIFACTS / "housing-360.png"), full_page=True)
    assert _layout_problems(page, 360) == {"scroll": 360, "wide": [], "small": []}

    # The page in English: the Chinese message first, the English one beside it.
    page.evaluate("window.form.setLanguage('en')")
    assert message.inner_text().splitlines() == [
        "建造年份应在1900年至今年之间",
        "the year built is between 1900 and this year",
    ]
    assert page.locator('label[for="f-build_year"]').inner_text() == "Year built"
    legend = page.locator('[data-path="appraisal_grade"] legend')
    assert legend.inner_text() == "House safety appraisal grade required"
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "housing-1280-en.png"), full_page=True)


def test_chinese_typing_issues_on_demand_and_a_stored_record(page: Any) -> None:
    page.evaluate(SHOW_HOUSING, ["zh", []])
    page.click(".vf-repeat .vf-add")
    caption = page.locator('.vf-row input[name$="/caption"]')
    caption.click()
    session = page.context.new_cdp_session(page)
    before = page.evaluate("window.changes.length")
    # Pinyin being composed is not an answer yet: nothing is validated or recorded.
    session.send("Input.imeSetComposition", {"text": "wu", "selectionStart": 2, "selectionEnd": 2})
    session.send(
        "Input.imeSetComposition", {"text": "wuding", "selectionStart": 6, "selectionEnd": 6}
    )
    assert caption.input_value() == "wuding"
    assert page.evaluate("window.changes.length") == before
    assert "caption" not in page.evaluate("window.form.values()")["photos"][0]
    session.send("Input.insertText", {"text": "屋顶"})
    assert caption.input_value() == "屋顶"
    assert page.evaluate("window.form.values()")["photos"][0]["caption"] == "屋顶"
    # A second word composes after the first; both are kept.
    session.send("Input.imeSetComposition", {"text": "lie", "selectionStart": 3, "selectionEnd": 3})
    session.send("Input.insertText", {"text": "裂缝"})
    assert page.evaluate("window.form.values()")["photos"][0]["caption"] == "屋顶裂缝"

    # A fresh form: no issue is shown until asked for; then the first one gets the focus.
    page.evaluate(SHOW_HOUSING, ["zh", []])
    assert page.locator(".vf-message p").count() == 0  # nothing shouted before any answer
    issue = page.evaluate("window.form.focusFirstIssue()")
    assert issue["path"] == "appraisal_grade" and issue["code"] == "required"
    assert page.evaluate("document.activeElement.name") == "appraisal_grade"
    assert page.locator('[id="m-appraisal_grade"]').inner_text() == "“房屋安全性鉴定等级”为必填项"
    codes = {i["code"] for i in page.evaluate("window.form.issues()")}
    assert "required" in codes

    # Stored records open as they are: values() is what the server's validation cleans them to
    # (a key this version of the form does not know included), on every built-in instrument;
    # nothing overflows a phone; read-only offers no edits.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    samples = {c["input"]["form_id"]: c for c in load_cases(VECTOR_DIR, "validate-sample-1-")}
    # A sample record of every survey instrument (verification_outcome, a system form, has none).
    assert sorted(samples) == sorted(BUILTIN_IDS)
    for form_id, case in sorted(samples.items()):
        stored = {**case["input"]["data"], "surveyor_note": "二次复核"}
        page.evaluate(
            """async ([formId, values]) => {
              const { renderForm } = await import("/static/forms/render.js");
              const doc = await (await fetch(`/instruments/${formId}.json`)).json();
              window.form = renderForm(document.getElementById("form"), doc,
                                       {values, today: "2026-11-25", readOnly: true});
            }""",
            [form_id, stored],
        )
        assert page.evaluate("window.form.values()") == {
            **case["expect"]["cleaned"],
            "surveyor_note": "二次复核",
        }, form_id
        assert page.locator(".vf-add, .vf-remove").count() == 0
        assert (
            page.locator("#form input:not([disabled]), #form select:not([disabled])").count() == 0
        )
        assert _layout_problems(page, 360) == {"scroll": 360, "wide": [], "small": []}, form_id
        page.screenshot(path=str(ARTIFACTS / f"{form_id}-360.png"), full_page=True)
        if form_id == "housing_safety":  # a stored point reads as the text one would type
            point = stored["location"]
            assert page.input_value("#f-location") == f"{point['lat']} {point['lon']}"


def test_a_uyghur_form_reads_right_to_left(page: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate(
        """async (doc) => {
          const { renderForm } = await import("/static/forms/render.js");
          window.form = renderForm(document.getElementById("form"), doc, {language: "ug"});
        }""",
        UYGHUR_FORM,
    )
    root = page.locator("#form")
    assert root.get_attribute("dir") == "rtl" and root.get_attribute("lang") == "ug"
    assert page.locator(".vf-title").inner_text() == "ئىچىملىك سۇ ئەھۋالى"
    assert (
        page.locator('label[for="f-litres"]').inner_text() == "ھەر بىر ئادەمنىڭ كۈندىلىك سۇ مىقدارى"
    )
    label = page.locator(".vf-choice").first.bounding_box()
    radio = page.locator('input[name="source"]').first.bounding_box()
    assert radio["x"] > label["x"] + label["width"] / 2  # the radio sits on the right
    page.fill("#f-litres", "0")
    page.locator("#f-litres").blur()
    assert page.locator('[id="m-litres"]').inner_text() != ""
    page.screenshot(path=str(ARTIFACTS / "uyghur-360.png"), full_page=True)
    assert _layout_problems(page, 360) == {"scroll": 360, "wide": [], "small": []}
    page.evaluate("window.form.setLanguage('zh')")
    assert root.get_attribute("dir") == "ltr"
    assert page.locator(".vf-title").inner_text() == "饮水情况"


def test_choice_filter_repeat_count_defaults_and_the_new_types_on_a_phone(page: Any) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate(
        """async (doc) => {
          const { renderForm } = await import("/static/forms/render.js");
          window.form = renderForm(document.getElementById("form"), doc, {today: "2026-11-25"});
        }""",
        NEW_TYPES_FORM,
    )
    values = page.evaluate("window.form.values()")
    # A new record starts with its defaults: two people, so two rows, each with its own default.
    assert values["size"] == 2 and page.input_value("#f-size") == "2"
    assert [r["mname"] for r in values["members"]] == ["未填", "未填"]
    assert [r["row_no"] for r in values["members"]] == [1, 2]
    assert page.locator('[data-path="members"] .vf-add').is_hidden()

    # choice_filter: only the towns of the chosen county are offered.
    towns = page.locator('[data-path="town"] .vf-choice:visible')
    assert towns.count() == 0  # no county yet: the filter reads an empty value, offers nothing
    page.locator('input[name="county"][value="c1"]').check()
    assert towns.all_inner_texts() == ["一乡"]
    page.locator('input[name="town"][value="t1"]').check()
    page.locator('input[name="county"][value="c2"]').check()
    # The town already chosen stays in sight, with the reason it no longer fits.
    assert towns.all_inner_texts() == ["一乡", "二乡"]
    assert page.locator('[id="m-town"]').inner_text() == "按已填的答案，“乡”不能选 t1"
    page.locator('input[name="town"][value="t2"]').check()
    assert towns.all_inner_texts() == ["二乡"]
    assert page.evaluate("window.form.values()")["town_name"] == "二乡"

    # repeat_count: the row count follows the expression; an answered row is never dropped.
    page.fill("#f-size", "3")
    assert page.locator('[data-path="members"] .vf-row').count() == 3
    page.fill("#f-size", "1")
    assert page.locator('[data-path="members"] .vf-row').count() == 1
    page.fill("#f-size", "2")
    second = page.locator('[data-path="members"] .vf-row').nth(1).locator("input")
    second.fill("李四")
    page.fill("#f-size", "1")
    assert page.locator('[data-path="members"] .vf-row').count() == 2
    assert "按 repeat_count 应为 1 行，实际 2 行" in page.locator('[id="m-members"]').inner_text()
    assert page.evaluate("window.form.values()")["members"][1]["mname"] == "李四"

    # The new types: typed time and date-time, a traced path, a ranked list.
    page.fill("#f-start", "08:30")
    page.fill("#f-visited", "2026-11-25T09:15")
    page.fill("#f-path", "25.04 102.71; 25.05 102.72")
    page.locator('[data-choice="school"] .vf-rank-up').click()
    page.locator('[data-choice="school"] .vf-rank-up').click()
    values = page.evaluate("window.form.values()")
    assert values["start"] == "08:30" and values["visited"] == "2026-11-25T09:15"
    assert values["path"] == [{"lat": 25.04, "lon": 102.71}, {"lat": 25.05, "lon": 102.72}]
    assert values["needs"] == ["school", "water", "road"]
    # A recording is picked on the device and recorded by its content address, like a photo.
    page.set_input_files(
        "#f-interview", files=[{"name": "a.m4a", "mimeType": "audio/mp4", "buffer": b"abc"}]
    )
    page.wait_for_function("window.form.values().interview !== undefined")
    assert page.evaluate("window.form.values()")["interview"] == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    page.fill("#f-plot", "25 102; 25.1 102; 25 102")  # a shape that is not closed enough
    page.locator("#f-plot").blur()
    assert page.locator('[id="m-plot"]').inner_text() == "区域至少需要 4 个点（首尾相同）"
    page.screenshot(path=str(ARTIFACTS / "new-types-360.png"), full_page=True)
    assert _layout_problems(page, 360) == {"scroll": 360, "wide": [], "small": []}
