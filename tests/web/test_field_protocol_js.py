"""The field app's JavaScript protocol client against the protocol's vectors, in Chromium.

Every protocol conformance case (sync_protocol/vectors/conformance/, except records.json, which
belongs to the form engine), the envelope and codec vectors and the device-engine scenarios run
in Debian's Chromium on modules served over loopback HTTP, and must give exactly the answers the
Python engines gave when the vectors were made. The one thing a browser cannot do is pinned
rather than skipped: suite 2 (ChaCha20-Poly1305 is not in WebCrypto) must be refused with
``envelope_unsupported_suite``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from tests.sync_protocol.conformance import load_cases, run_cases
from tests.web.field_static import serve_field_static

PROTOCOL_FILES = ("clock.json", "framing.json", "merge.json", "messages.json")
UNSUPPORTED_SUITE = {"error": {"code": "envelope_unsupported_suite"}}


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    with serve_field_static() as static:
        tab = chromium.new_page()
        tab.goto(f"{static.url}/")
        yield tab
        tab.close()


def _in_browser(page: Any, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return page.evaluate(
        """async (cases) => {
            const { answer } = await import("/tests/conformance.js");
            const out = [];
            for (const c of cases) {
              try { out.push(await answer(c.check, c.input)); }
              catch (e) { out.push({ thrown: String(e && e.stack || e) }); }
            }
            return out;
        }""",
        cases,
    )


def _browser_expectation(case: dict[str, Any]) -> Any:
    """What the browser must answer: the Python answer, with suite-2 envelopes refused."""
    expect = case["expect"]
    if case["check"] == "sealed.open":
        expect = copy.deepcopy(expect)
        expect["opened"] = [
            UNSUPPORTED_SUITE if item.get("suite") == 2 else item for item in expect["opened"]
        ]
    return expect


def test_protocol_conformance_cases_pass_in_chromium(page: Any) -> None:
    cases = [c for c in load_cases() if c["file"] in PROTOCOL_FILES]
    assert {c["check"] for c in cases} >= {
        "message.decode",
        "state.decode",
        "frames.encode",
        "frames.decode",
        "sealed.open",
        "stamp.parse",
        "clock.run",
        "clock.suspect",
        "state.bases",
        "state.resolution",
        "merge.run",
    }
    answers = _in_browser(page, cases)
    expected = [{**c, "expect": _browser_expectation(c)} for c in cases]

    def implementation(requests: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for _request, got in zip(requests, answers, strict=True):
            yield got

    outcome = run_cases(expected, implementation)
    failures = [
        f"{case_id}: expected {json.dumps(want, ensure_ascii=False)[:600]}\n"
        f"  got {json.dumps(got, ensure_ascii=False)[:600]}"
        for case_id, want, got in outcome.failed
    ]
    assert not failures, "\n".join(failures)
    assert outcome.skipped == []
    assert len(outcome.passed) == len(cases)
    # The suite-2 rule above is exercised, not vacuous.
    assert any(c["expect"] != _browser_expectation(c) for c in cases)


def test_envelope_codec_and_device_engine_vectors_and_pacing_in_chromium(page: Any) -> None:
    problems = page.evaluate(
        """async () => {
            const { envelopeMismatches, codecMismatches } = await import("/tests/envelope_vectors.js");
            const load = async (name) => (await fetch(`/vectors/${name}`)).json();
            return [
              ...(await envelopeMismatches(await load("envelope.json"))),
              ...(await codecMismatches(await load("codec.json"))),
            ];
        }"""
    )
    assert problems == []

    # Like sync_protocol.codec.parse_json, an object with a repeated key is refused (JSON.parse
    # alone would keep the last one), also when the key is spelt with an escape.
    refused = page.evaluate(
        """async () => {
            const { decodeMessage } = await import("/field/static/protocol/messages.js");
            const texts = ['{"type":"hello","type":"reply"}', '{"type":"hello","\\\\u0074ype":"x"}',
                           '{"type":"hello","device_id":"a:\\\\"b","cursors":{}}'];
            return texts.map((t) => {
              try { decodeMessage(new TextEncoder().encode(t)); return null; }
              catch (e) { return [e.code, e.where]; }
            });
        }"""
    )
    assert refused == [["message_invalid", "message"], ["message_invalid", "message"], refused[2]]
    assert refused[2] != ["message_invalid", "message"]  # a ':' inside a string is no key

    results = page.evaluate(
        """async () => {
            const { runScenario } = await import("/tests/device_vectors.js");
            const doc = await (await fetch("/vectors/device_engine.json")).json();
            const out = {};
            for (const s of doc.scenarios) out[s.name] = await runScenario(s);
            return out;
        }"""
    )
    assert len(results) >= 7
    scenario_problems = {name: found for name, found in results.items() if found}
    assert scenario_problems == {}

    # Pacing: batches cut to the wire budget, the planner, the backoff schedule.
    found = page.evaluate(
        """async () => {
            const { splitIntoBatches, BatchPlanner } = await import("/field/static/protocol/client.js");
            const { Backoff, LinkEstimate } = await import("/field/static/protocol/device.js");
            const { sealMessage, encodeFrames } = await import("/field/static/protocol/envelope.js");
            const { canonicalJson } = await import("/field/static/protocol/codec.js");
            const doc = await (await fetch("/vectors/codec.json")).json();
            const template = doc.vectors[0].ops[0];
            // Random notes, so that compression cannot fold the ops into one small batch.
            const noise = () => Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join("");
            const ops = Array.from({ length: 120 }, (_, i) => ({
              ...template, seq: i + 1, record_id: `r-${i}`, changes: { ...template.changes, note: noise() },
            }));
            const keys = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
            const server = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
            const serverRaw = new Uint8Array(await crypto.subtle.exportKey("raw", server.publicKey));
            const limit = 2048;
            const batches = await splitIntoBatches(ops, limit, { senderId: template.device_id, firstBatchSeq: 5 });
            const sizes = [];
            for (const b of batches) {
              const envelope = await sealMessage(b, { recipientPublicRaw: serverRaw, senderId: template.device_id, signingKey: keys.privateKey, sequence: b.batch_seq });
              sizes.push(encodeFrames([envelope]).length);
            }
            const planner = new BatchPlanner();
            const link = new LinkEstimate({ initialBytes: 4096 });
            const planned = await planner.plan(ops, link, { senderId: template.device_id });
            let draws = 0;
            const backoff = new Backoff({ random: () => [0, 0.999][draws++ % 2] });
            const delays = Array.from({ length: 12 }, () => backoff.nextDelay());
            link.failed();
            return {
              sizes, limit, seqs: batches.map((b) => b.batch_seq),
              sameOps: canonicalJson(batches.flatMap((b) => b.ops)) === canonicalJson(ops),
              plannedOps: planned.flatMap((b) => b.ops.map((o) => o.seq)), plannedBatches: planned.length,
              delays, budgetAfterDrop: link.requestBytes,
            };
        }"""
    )
    assert found["sameOps"] and len(found["sizes"]) > 1
    assert max(found["sizes"]) <= found["limit"]
    assert found["seqs"] == list(range(5, 5 + len(found["sizes"])))
    # The planner sends a prefix of the outbox within its budget (4 KiB: one batch, not all).
    assert found["plannedBatches"] == 1
    assert 0 < len(found["plannedOps"]) < 120
    assert found["plannedOps"] == list(range(1, len(found["plannedOps"]) + 1))
    for n, delay in enumerate(found["delays"], start=1):
        step = min(300.0, 2.0 ** (n - 1))
        assert step / 2 <= delay <= step
    assert found["budgetAfterDrop"] == 2048

    # Giving up keeps everything: with no server (a closed loopback port) the client tries
    # maxFailures times with growing waits, then returns; the op is still in the outbox.
    outage = page.evaluate(
        """async () => {
            const { DeviceEngine } = await import("/field/static/protocol/device.js");
            const { MemoryStorage } = await import("/field/static/protocol/memory-storage.js");
            const { generateDeviceKeys } = await import("/field/static/protocol/enrol.js");
            const { syncUntilDone } = await import("/field/static/protocol/client.js");
            const doc = await (await fetch("/vectors/codec.json")).json();
            const storage = new MemoryStorage();
            const engine = new DeviceEngine(storage, "dev-7f3a");
            const { seq, hlc, ...template } = doc.vectors[0].ops[0];
            await engine.queueOp((n, stamp) => ({ ...template, seq: n, hlc: stamp.toText() }), { nowMs: Date.now() });
            const keys = await generateDeviceKeys();
            const serverKeys = await generateDeviceKeys();
            const device = { deviceId: "dev-7f3a", scope: "530102001201", keys,
              server: { encryptionPublic: serverKeys.encryption.publicRaw, signingKey: null } };
            const waits = [];
            const report = await syncUntilDone({ engine, device, baseUrl: "http://127.0.0.1:9",
              maxFailures: 3, sleep: async (s) => { waits.push(s); } });
            return { done: report.done, failures: report.failures, error: report.lastError.code,
                     waits, outbox: storage.snapshot().outbox };
        }"""
    )
    assert outage["done"] is False and outage["failures"] == 3
    assert outage["error"] == "network_failed"
    assert len(outage["waits"]) == 2
    assert 0.5 <= outage["waits"][0] <= 1 and 1 <= outage["waits"][1] <= 2
    assert [(o["seq"], o["state"], o["attempts"]) for o in outage["outbox"]] == [(1, "sent", 3)]


def test_the_browser_link_estimate_leaves_out_the_servers_time_as_python_does(page: Any) -> None:
    from sync_protocol.pacing import LinkEstimate

    # (sent, received, elapsed s, server s or None, uploaded): a quick server, a busy one, a
    # reply without the header, a download-only exchange, a server time beyond the exchange;
    # (0, 0, s, None, None): the link dropped s seconds into an exchange (None: not a drop).
    steps = [
        (20_000, 20_000, 5.1, 0.1, True),
        (20_000, 20_000, 25.0, 20.0, True),
        (9_000, 30_000, 6.0, None, True),
        (600, 45_000, 7.0, 1.5, False),
        (8_000, 8_000, 2.0, 5.0, True),
        *[(0, 0, 3.0, None, None), (8_000, 8_000, 2.0, 0.1, True)] * 5,
        (0, 0, None, None, None),
        (8_000, 8_000, 2.0, 0.1, True),
    ]
    python = LinkEstimate(initial_bytes=4096)
    expected = []
    for sent, received, elapsed, server, uploaded in steps:
        if uploaded is None:
            python.failed(elapsed)
        else:
            python.observe(sent, received, elapsed, uploaded=uploaded, server_s=server)
        expected.append(
            [python.request_bytes, round(python.reply_ratio, 9), round(python.exchange_target_s, 9)]
        )
    assert expected[-1][2] < python.target_s * 0.75  # the drops shortened the exchanges
    found = page.evaluate(
        """async (steps) => {
            const { LinkEstimate } = await import("/field/static/protocol/device.js");
            const { serverTimingS } = await import("/field/static/protocol/client.js");
            const link = new LinkEstimate({ initialBytes: 4096 });
            const round = (x) => Math.round(x * 1e9) / 1e9;
            const budgets = steps.map(([sent, received, elapsed, serverS, uploaded]) => {
              if (uploaded === null) link.failed(elapsed);
              else link.observe(sent, received, elapsed, { uploaded, serverS });
              return [link.requestBytes, round(link.replyRatio), round(link.exchangeTargetS)];
            });
            const headers = ["app;dur=12.5", 'db;dur=3, app;desc="sync";dur=250', "app",
                             "app;dur=abc", "app;dur=-5", "", null];
            return { budgets, timings: headers.map(serverTimingS) };
        }""",
        steps,
    )
    assert found["budgets"] == expected
    assert found["timings"] == [0.0125, 0.25, None, None, None, None, None]
