// Hybrid logical clock stamps (port of sync_protocol/clock.py, contracts §6).
import { ProtocolError } from "./errors.js";

export const MAX_MS = 2 ** 48 - 1;
export const MAX_COUNTER = 0xffff;
export const DEFAULT_MAX_DRIFT_MS = 300_000;
const NODE_RE = /^[!-~]{1,64}$/;
const TEXT_RE = /^([0-9a-f]{12})-([0-9a-f]{4})-([!-~]{1,64})$/;

const invalid = (message) => new ProtocolError("stamp_invalid", message, { zh: "时间戳格式无效" });

function checkNode(node) {
  if (typeof node !== "string" || !NODE_RE.test(node)) throw invalid(`bad node id ${node}`);
  return node;
}

export class Stamp {
  constructor(ms, counter, node) {
    if (!Number.isInteger(ms) || ms < 0 || ms > MAX_MS) throw invalid(`bad ms ${ms}`);
    if (!Number.isInteger(counter) || counter < 0 || counter > MAX_COUNTER) {
      throw invalid(`bad counter ${counter}`);
    }
    this.ms = ms;
    this.counter = counter;
    this.node = checkNode(node);
  }

  /** Fixed-width text: comparing two texts as strings orders them like the stamps. */
  toText() {
    return `${this.ms.toString(16).padStart(12, "0")}-${this.counter.toString(16).padStart(4, "0")}-${this.node}`;
  }

  toBytes() {
    const node = new TextEncoder().encode(this.node);
    const out = new Uint8Array(9 + node.length);
    const view = new DataView(out.buffer);
    view.setBigUint64(0, (BigInt(this.ms) << 16n) | BigInt(this.counter));
    out[8] = node.length;
    out.set(node, 9);
    return out;
  }

  static parse(text) {
    const match = typeof text === "string" ? TEXT_RE.exec(text) : null;
    if (!match) throw invalid(`not a clock stamp: ${String(text).slice(0, 80)}`);
    return new Stamp(parseInt(match[1], 16), parseInt(match[2], 16), match[3]);
  }
}

/** True when `stamp` is more than `maxDriftMs` ahead of the trusted `referenceMs`. */
export function isSuspect(stamp, referenceMs, maxDriftMs = DEFAULT_MAX_DRIFT_MS) {
  const parsed = typeof stamp === "string" ? Stamp.parse(stamp) : stamp;
  return parsed.ms - referenceMs > maxDriftMs;
}

const rangeError = (message) => new ProtocolError("clock_out_of_range", message, { zh: "时钟超出可表示的范围" });

/** A hybrid logical clock; every stamp it issues is strictly greater than the previous one. */
export class HybridClock {
  constructor(node, nowMs = () => Date.now(), { last = null } = {}) {
    this.node = checkNode(node);
    this.nowMs = nowMs;
    this.ms = last ? last.ms : 0;
    this.counter = last ? last.counter : -1;
  }

  get last() {
    return this.counter < 0 ? null : new Stamp(this.ms, this.counter, this.node);
  }

  wall() {
    const wall = this.nowMs();
    if (!Number.isInteger(wall) || wall < 0 || wall > MAX_MS) throw rangeError(`wall clock ${wall}`);
    return wall;
  }

  issue(ms, counter) {
    if (counter > MAX_COUNTER) [ms, counter] = [ms + 1, 0];
    if (ms > MAX_MS) throw rangeError("clock would pass 2**48 ms");
    this.ms = ms;
    this.counter = counter;
    return new Stamp(ms, counter, this.node);
  }

  now() {
    const wall = this.wall();
    return wall > this.ms ? this.issue(wall, 0) : this.issue(this.ms, this.counter + 1);
  }

  /** Fold in a received Stamp, or a server time in ms (a bare time carries no event). */
  observe(remote) {
    let remoteMs;
    let remoteCounter;
    if (remote instanceof Stamp) {
      [remoteMs, remoteCounter] = [remote.ms, remote.counter];
    } else if (Number.isInteger(remote)) {
      if (remote < 0 || remote > MAX_MS) throw rangeError(`remote time ${remote}`);
      [remoteMs, remoteCounter] = [remote, -1];
    } else {
      throw invalid(`cannot observe ${remote}`);
    }
    const wall = this.wall();
    const ms = Math.max(wall, this.ms, remoteMs);
    let counter;
    if (ms === this.ms && ms === remoteMs) counter = Math.max(this.counter, remoteCounter) + 1;
    else if (ms === this.ms) counter = this.counter + 1;
    else if (ms === remoteMs) counter = remoteCounter + 1;
    else counter = 0;
    return this.issue(ms, counter);
  }
}
