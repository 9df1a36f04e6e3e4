// Send N HL7 messages to an MLLP listener with node-hl7-client and print the ACKs as JSON.
// Usage: node hl7_send.cjs <host> <port> <count> [caFile]
// Each message is sent once the ACK of the previous one arrived (how most senders work).
// Output (stdout, one line): {"acks": [["AA", "NODE-0"], ...]}; exit 2 on timeout.
"use strict";
const fs = require("node:fs");
const { Client, Message } = require("node-hl7-client");

const [host, portText, countText, caFile] = process.argv.slice(2);
const count = Number(countText);
const acks = [];

function text(i) {
  return [
    "MSH|^~\\&|NODELAB|NODEFAC|PASSERELLE|GW|20260101120000||ORU^R01^ORU_R01|NODE-" + i + "|P|2.5",
    "PID|1||" + (100 + i) + "^^^LAB^PI||TEST^NODE",
    "OBX|1|NM|GLU^Glucose||5." + (i % 10) + "|mmol/L|||||F",
  ].join("\r");
}

function finish(code, error) {
  process.stdout.write(JSON.stringify(error ? { acks, error } : { acks }) + "\n");
  process.exit(code);
}

const timer = setTimeout(() => finish(2, "timeout"), 20000);

const options = { host };
if (caFile) options.tls = { ca: fs.readFileSync(caFile), servername: "localhost" };
const client = new Client(options);
const conn = client.createConnection({ port: Number(portText) }, async (res) => {
  const msg = res.getMessage();
  acks.push([msg.get("MSA.1").toString(), msg.get("MSA.2").toString()]);
  if (acks.length === count) {
    clearTimeout(timer);
    finish(0);
  } else {
    await conn.sendMessage(new Message({ text: text(acks.length) }));
  }
});

conn.sendMessage(new Message({ text: text(0) })).catch((err) => finish(1, String(err && err.message)));
