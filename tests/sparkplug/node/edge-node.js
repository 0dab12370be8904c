// A third-party Sparkplug B edge node for aquavolt's tests: Eclipse Tahu's sparkplug-client
// (npm), driven by the test over stdin, one JSON command a line; it reports on stdout, one
// JSON event a line, what it published (so the test compares InfluxDB with it).
//
//   node edge-node.js MQTT_URL GROUP NODE
//
// Commands: {"op": "birth"}   NBIRTH (node metrics) then a DBIRTH per device
//           {"op": "ndata", "metrics": [{"name", "value", "timestamp"?}]}
//           {"op": "ddata", "device", "metrics": [{"name", "value", "timestamp"?, "historical"?}]}
//           {"op": "raw", "device", "metrics": [...]}  DDATA with metrics as given (no alias lookup)
//           {"op": "lose"}     the next seq is skipped, as if a message were lost on the way
//           {"op": "ddeath", "device"}
//           {"op": "stop"}     NDEATH and a clean disconnect
// The node answers an NCMD "Node Control/Rebirth" with its births, as the specification asks.
"use strict";

const readline = require("readline");
const sparkplug = require("sparkplug-client");

const [serverUrl, groupId, edgeNode] = process.argv.slice(2);

// metric name -> [alias, Sparkplug datatype, unit]
const NODE_METRICS = { "Line/Pressure": [1, "Float", "bar"] };
const DEVICES = {
  Meter1: { "Flow/Rate": [1, "Float", "L/s"], "Flow/Total": [2, "Double", "m3"], Extra: [3, "Int32", ""] },
  Meter2: { "Flow/Rate": [1, "Float", "L/s"], "Flow/Total": [2, "Double", "m3"] },
};
const values = { node: { "Line/Pressure": 3.5 }, Meter1: { "Flow/Rate": 12.5, "Flow/Total": 1000.25, Extra: 7 },
  Meter2: { "Flow/Rate": 2.25, "Flow/Total": 50.5 } };

function say(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

const client = sparkplug.newClient({
  serverUrl, groupId, edgeNode, username: "", password: "", clientId: `tahu-${edgeNode}-${process.pid}`,
  version: "spBv1.0", publishDeath: true, keepalive: 5,
});

function birthMetric(name, [alias, type, unit], value) {
  const m = { name, alias, type, value };
  if (unit) m.properties = { engUnit: { type: "String", value: unit } };
  return m;
}

function births() {
  const ts = Date.now();
  const nodeMetrics = Object.entries(NODE_METRICS).map(([n, d]) => birthMetric(n, d, values.node[n]));
  nodeMetrics.push({ name: "Node Control/Rebirth", type: "Boolean", value: false });
  client.publishNodeBirth({ timestamp: ts, metrics: nodeMetrics });
  for (const [device, metrics] of Object.entries(DEVICES)) {
    client.publishDeviceBirth(device, {
      timestamp: ts, metrics: Object.entries(metrics).map(([n, d]) => birthMetric(n, d, values[device][n])),
    });
  }
  say({ event: "births", timestamp: ts, values });
}

function aliased(table, metrics) {
  return metrics.map((m) => {
    const [alias, type] = table[m.name];
    const out = { alias, type, value: m.value };
    if (m.timestamp !== undefined) out.timestamp = m.timestamp;
    if (m.historical) out.isHistorical = true;
    return out;
  });
}

function handle(cmd) {
  const ts = Date.now();
  switch (cmd.op) {
    case "birth":
      births();
      break;
    case "ndata":
      client.publishNodeData({ timestamp: ts, metrics: aliased(NODE_METRICS, cmd.metrics) });
      say({ event: "ndata", timestamp: ts });
      break;
    case "ddata":
      client.publishDeviceData(cmd.device, { timestamp: ts, metrics: aliased(DEVICES[cmd.device], cmd.metrics) });
      say({ event: "ddata", device: cmd.device, timestamp: ts });
      break;
    case "raw":
      client.publishDeviceData(cmd.device, { timestamp: ts, metrics: cmd.metrics });
      say({ event: "raw", device: cmd.device, timestamp: ts });
      break;
    case "lose":
      client.seq = (client.seq + 1) % 256; // the sequence number of a message that never arrives
      say({ event: "lost" });
      break;
    case "ddeath":
      client.publishDeviceDeath(cmd.device, { timestamp: ts });
      say({ event: "ddeath", device: cmd.device });
      break;
    case "stop":
      client.stop();
      say({ event: "stopped" });
      break;
    default:
      say({ event: "error", error: `unknown op ${cmd.op}` });
  }
}

client.on("birth", () => {
  say({ event: "connected" });
  births();
});
client.on("ncmd", (payload) => {
  const rebirth = (payload.metrics || []).find((m) => m.name === "Node Control/Rebirth");
  if (rebirth && rebirth.value === true) {
    say({ event: "rebirth_requested" });
    births();
  }
});
client.on("error", (error) => say({ event: "error", error: String(error) }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim()) handle(JSON.parse(line));
});
