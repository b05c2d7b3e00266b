// envelope.json and codec.json against the JS (the twin of tests/sync_protocol/
// test_envelope_vectors.py and test_codec vectors). Returns mismatches, each naming its vector.
import { decodeBatch, encodeBatch, canonicalJson, opFromDict } from "/field/static/protocol/codec.js";
import { decompress, fromHex, hex, importEd25519Private, importEd25519Public, importX25519Private, open, seal } from "/field/static/protocol/envelope.js";

async function party(p) {
  return {
    id: p.sender_id,
    x25519: await importX25519Private(fromHex(p.x25519_private_hex)),
    x25519Public: fromHex(p.x25519_public_hex),
    signing: await importEd25519Private(fromHex(p.ed25519_private_seed_hex)),
    verify: await importEd25519Public(fromHex(p.ed25519_public_hex)),
  };
}

export async function envelopeMismatches(doc) {
  const problems = [];
  const device = await party(doc.device);
  const server = await party(doc.server);
  const known = (id) => (id === device.id ? device.verify : id === server.id ? server.verify : null);
  for (const v of doc.vectors) {
    const [from, to] = v.direction === "device_to_server" ? [device, server] : [server, device];
    const where = `vector "${v.name}"`;
    if (v.suite === 1) {
      const envelope = await seal(fromHex(v.payload_hex), {
        recipientPublicRaw: to.x25519Public, senderId: v.sender_id, signingKey: from.signing, sequence: v.sequence,
        compression: v.compression,
        ephemeral: { privateKey: await importX25519Private(fromHex(v.ephemeral_private_hex)), publicRaw: fromHex(v.ephemeral_public_hex) },
        nonce: fromHex(v.nonce_hex),
      });
      if (hex(envelope) !== v.envelope_hex) problems.push(`${where}: sealed bytes differ`);
    }
    try {
      const opened = await open(fromHex(v.envelope_hex), { recipientPrivateKey: to.x25519, recipientPublicRaw: to.x25519Public, senderVerifyKey: known });
      if (v.suite !== 1) problems.push(`${where}: suite ${v.suite} opened, but the browser has no ChaCha20-Poly1305`);
      else if (hex(opened.payload) !== v.payload_hex || opened.header.senderId !== v.sender_id || opened.header.sequence !== v.sequence) {
        problems.push(`${where}: opened to something else`);
      }
    } catch (error) {
      if (v.suite === 1 || error.code !== "envelope_unsupported_suite") problems.push(`${where}: open failed with ${error.code || error}`);
    }
  }
  for (const r of doc.rejections) {
    const used = r.already_used;
    try {
      await open(fromHex(r.envelope_hex), {
        recipientPrivateKey: server.x25519, recipientPublicRaw: server.x25519Public, senderVerifyKey: known,
        isReplay: (sender, sequence) => Boolean(used && used.sender_id === sender && used.sequence === sequence),
      });
      problems.push(`rejection "${r.name}": opened, want ${r.error_code}`);
    } catch (error) {
      if (error.code !== r.error_code) problems.push(`rejection "${r.name}": ${error.code || error} != ${r.error_code}`);
    }
  }
  return problems;
}

export async function codecMismatches(doc) {
  const problems = [];
  for (const v of doc.vectors) {
    const batch = encodeBatch(v.ops);
    if (hex(batch) !== v.batch_hex) problems.push(`codec "${v.name}": batch bytes differ`);
    if (canonicalJson(decodeBatch(batch)) !== canonicalJson(v.ops.map(opFromDict))) problems.push(`codec "${v.name}": decoded ops differ`);
    const inflated = await decompress(1, fromHex(v.compressed["deflate-raw"].hex));
    if (hex(inflated) !== v.batch_hex) problems.push(`codec "${v.name}": deflate-raw does not inflate to the batch`);
  }
  return problems;
}
