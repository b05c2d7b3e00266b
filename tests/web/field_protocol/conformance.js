// The browser's answers to the protocol conformance cases (tests/sync_protocol/conformance.py
// line protocol: one {check, input} → one JSON answer). Served to Chromium by
// tests/web/test_field_protocol_js.py next to the app's protocol modules.
import { HybridClock, Stamp, isSuspect } from "/field/static/protocol/clock.js";
import { decodeMessage, encodeMessage } from "/field/static/protocol/messages.js";
import { decodeFrames, encodeFrames, fromHex, hex, importEd25519Public, importX25519Private, openMessage } from "/field/static/protocol/envelope.js";
import { RecordState, deviceView, merge, resolution } from "/field/static/protocol/merge.js";
import { compareText, opFromDict } from "/field/static/protocol/codec.js";

const text = (bytes) => new TextDecoder().decode(bytes);
const error = (e) => {
  if (!e.code) throw e;
  const out = { code: e.code };
  if (typeof e.where === "string" && e.where && e.code !== "op_invalid") out.where = e.where;
  return { error: out };
};

const CHECKS = {
  "message.decode"(input) {
    try {
      const message = decodeMessage(new TextEncoder().encode(input.payload_text));
      return { type: message.type, canonical_text: text(encodeMessage(message)) };
    } catch (e) {
      return error(e);
    }
  },
  "frames.encode": (input) => ({ body_hex: hex(encodeFrames(input.envelopes_hex.map(fromHex))) }),
  "frames.decode"(input) {
    const shape = (f) => ({ index: f.index, data_hex: hex(f.data), truncated: f.truncated });
    try {
      return { frames: decodeFrames(fromHex(input.body_hex)).map(shape) };
    } catch (e) {
      return { frames: (e.frames || []).map(shape), ...error(e) };
    }
  },
  "stamp.parse"(input) {
    try {
      const s = Stamp.parse(input.text);
      return { ms: s.ms, counter: s.counter, node: s.node, bytes_hex: hex(s.toBytes()) };
    } catch (e) {
      return error(e);
    }
  },
  "clock.run"(input) {
    const wall = { ms: 0 };
    const clock = new HybridClock(input.node, () => wall.ms, { last: input.last ? Stamp.parse(input.last) : null });
    const stamps = input.events.map((event) => {
      wall.ms = event.wall;
      if ("observe" in event) {
        const remote = event.observe;
        return clock.observe(typeof remote === "number" ? remote : Stamp.parse(remote)).toText();
      }
      return clock.now().toText();
    });
    return { stamps };
  },
  "clock.suspect": (input) => ({ suspect: isSuspect(input.stamp, input.server_ms, input.max_drift_ms) }),
  "merge.run"(input) {
    const policy = (path) => input.policies[path] ?? input.policies["*"] ?? "lww";
    let state = input.state ? RecordState.fromDict(input.state) : null;
    const results = input.steps.map((step) => {
      try {
        const result = merge(state, opFromDict(step.op), policy, { referenceMs: step.server_ms });
        state = result.state;
        return {
          status: result.status, changed: result.changed, suspect: result.suspect,
          field_outcomes: Object.fromEntries(Object.keys(result.field_outcomes).sort(compareText).map((p) => [p, result.field_outcomes[p]])),
          conflicts: result.conflicts, closed_conflict_ids: result.closed_conflict_ids,
        };
      } catch (e) {
        return error(e);
      }
    });
    return { results, state: state.toDict(), device_view: deviceView(state) };
  },
  "state.decode"(input) {
    try {
      const state = RecordState.fromDict(input.state);
      return { canonical: state.toDict(), device_view: deviceView(state) };
    } catch (e) {
      return error(e);
    }
  },
  "state.bases"(input) {
    const state = RecordState.fromDict(input.state);
    return {
      base_for: state.baseFor(input.paths),
      delete_base: Object.fromEntries(input.delete_scopes.map((s) => [s, state.deleteBase(s)])),
    };
  },
  "state.resolution"(input) {
    const { changes, base } = resolution(RecordState.fromDict(input.state), input.conflict_id, input.chosen);
    return { changes, base };
  },
  async "sealed.open"(input) {
    const publicRaw = fromHex(input.recipient_x25519_public_hex || "");
    const own = await importX25519Private(fromHex(input.recipient_x25519_private_hex), true);
    const ownPublic = publicRaw.length ? publicRaw : await publicOf(own);
    const senderKey = await importEd25519Public(fromHex(input.sender_ed25519_public_hex));
    const envelopes = "envelope_hex" in input ? [fromHex(input.envelope_hex)] : decodeFrames(fromHex(input.body_hex)).map((f) => f.data);
    const opened = [];
    for (const envelope of envelopes) {
      try {
        const { header, message } = await openMessage(envelope, {
          recipientPrivateKey: own,
          recipientPublicRaw: ownPublic,
          senderVerifyKey: (sender) => (sender === input.sender_id ? senderKey : null),
        });
        opened.push({
          sender_id: header.senderId, sequence: header.sequence, suite: header.suite,
          compression: header.compression, type: message.type, canonical_text: text(encodeMessage(message)),
        });
      } catch (e) {
        opened.push(error(e));
      }
    }
    return { opened };
  },
};

// The case gives only the private key; its public half comes from the key's JWK (the private
// test key is imported extractable for this alone).
async function publicOf(privateKey) {
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  return Uint8Array.from(atob(jwk.x.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
}

export async function answer(check, input) {
  const run = CHECKS[check];
  if (!run) return { unsupported: true };
  return JSON.parse(JSON.stringify(await run(input)));
}
