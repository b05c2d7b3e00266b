"""The field app's JS form engine and renderer (server/field/static/forms/), in Chromium.

The engine runs every conformance case of the form engine's checks — the same vectors
tests/sync_protocol runs against Python — so one rule set is proven on both sides; a wrong
answer names its case. The renderer is driven as a person would on a 360 px phone: skip logic,
a violated constraint and its message, repeat rows, a calculation, a right-to-left Uyghur form
and Chinese typed through an input method. Everything is served by a real HTTP server on
loopback (a secure context, as the county server is to a tablet).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.sync_protocol.conformance import VECTOR_DIR, _same, load_cases

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
FORM_CHECKS = ("paths.flatten", "expression.evaluate", "record.validate", "household.indicators")
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
    context = chromium.new_context(viewport={"width": 360, "height": 780}, device_scale_factor=1)
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


def test_an_expression_is_parsed_to_a_tree_never_run_as_code(page: Any) -> None:
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
          };
        }"""
    )
    assert out["tree"] == "binary"
    assert out["calls"] == ["unknown_function", 0]
    assert out["proto"] == ["unexpected_token", 12]  # as forms/expressions.py answers
    assert out["value"] is None
