// Decode (and encode) Sparkplug B payloads with Eclipse Tahu's sparkplug-payload (npm).
// stdin: one JSON object per line, {"topic": ..., "payload": base64} to decode, or
// {"topic": ..., "encode": {payload object as the library takes it}} to encode; stdout: one
// JSON line per input, {"topic": ..., "payload": decoded} (64-bit integers as decimal
// strings) or {"topic": ..., "encoded": base64}.
"use strict";
const readline = require("readline");
const Long = require("long");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

function plain(value) {
  if (Long.isLong(value)) return value.toString();
  if (value instanceof Uint8Array) return Buffer.from(value).toString("base64");
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const msg = JSON.parse(line);
  let out;
  try {
    if (msg.encode !== undefined) {
      out = { topic: msg.topic, encoded: Buffer.from(sparkplug.encodePayload(msg.encode)).toString("base64") };
    } else {
      out = { topic: msg.topic, payload: plain(sparkplug.decodePayload(Buffer.from(msg.payload, "base64"))) };
    }
  } catch (err) {
    out = { topic: msg.topic, error: String(err) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
});
