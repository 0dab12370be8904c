// node-opcua server (an independent OPC-UA stack) serving one av_rtu_transformer under SS1.TR1
// (namespace urn:aquavolt:sim) for bench/opcua_recovery.py: node server.js PORT [OilTemperature]
const { OPCUAServer } = require("node-opcua-server");
const { DataType } = require("node-opcua-variant");
const port = parseInt(process.argv[2], 10);
const oil = parseFloat(process.argv[3] || "40.0");
const points = [["OilTemperature", DataType.Double, oil], ["WindingTemperature", DataType.Double, 50.0],
  ["Load", DataType.Double, 300.0], ["TapPosition", DataType.Int32, 3], ["BusbarVoltage", DataType.Double, 20000.0],
  ["DoorOpen", DataType.Boolean, false]];
(async () => {
  const server = new OPCUAServer({ port, hostname: "127.0.0.1", resourcePath: "/aquavolt/rtu",
buildInfo: { productName: "nodeua-test" } });
  await server.initialize();
  const as = server.engine.addressSpace;
  const ns = as.registerNamespace("urn:aquavolt:sim");
  const dev = ns.addObject({ organizedBy: as.rootFolder.objects, browseName: "SS1.TR1" });
  for (const [node, dt, v] of points) {
    ns.addVariable({ componentOf: dev, nodeId: `s=SS1.TR1.${node}`, browseName: node,
      dataType: DataType[dt], value: { dataType: dt, value: v } });
  }
  await server.start();
  console.log("ready");
})().catch((e) => { console.error(e); process.exit(1); });
