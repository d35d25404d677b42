// The client side of tests/cross_host.rs: many sessions of the TypeScript SDK's
// StreamableHTTPClientTransport through a balancer in front of mcpvisor replicas.
// Usage: node driver.cjs INTEROP_DIR URL. Commands come on stdin, one per line; each answer is
// one JSON line on stdout:
//   open N     open N sessions (initialize), answer {by_replica}
//   call       tools/list on every session; a session that gets 404 (its replica is gone) starts
//              a new one and tries again, as the MCP specification asks; answer {ok, failed,
//              kept, moved: {from: n}, by_replica, errors}
//   slow MS    a request of MS ms on every session: answer {sent} once all are out, then
//              {ok, failed, errors} when all have ended
//   close      end every session and exit
// A session's replica is the name at the front of its Mcp-Session-Id (mcpvisor --replica).
"use strict";
const path = require("path");
const readline = require("readline");
const { createRequire } = require("module");

const [interopDir, url] = process.argv.slice(2);
const req = createRequire(path.join(interopDir, "node_modules", "noop.js"));
const { Client } = req("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = req("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { ResultSchema } = req("@modelcontextprotocol/sdk/types.js");

const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const replicaOf = (s) => (s.transport.sessionId || "").split(".")[0];
let sessions = [];

async function connect() {
  // A replica that is not up yet refuses the connection: try again (a fresh client each time:
  // an SDK client connects once) for a while.
  for (let attempt = 0; ; attempt++) {
    const transport = new StreamableHTTPClientTransport(new URL(url));
    const client = new Client({ name: "cross-host", version: "1.0.0" });
    try {
      await client.connect(transport);
      return { client, transport };
    } catch (e) {
      await client.close().catch(() => {});
      if (attempt >= 50) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

// Runs `f` over `items`, `width` at a time.
async function eachLimited(items, width, f) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await f(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
}

function countBy(list) {
  const out = {};
  for (const k of list) out[k] = (out[k] || 0) + 1;
  return out;
}

const isGone = (e) => String(e && (e.code ?? "")) === "404" || /404|no such session/i.test(String(e && e.message));

async function open(n) {
  const fresh = new Array(n);
  await eachLimited([...Array(n).keys()], 20, async (i) => {
    fresh[i] = await connect();
  });
  sessions = sessions.concat(fresh);
  say({ by_replica: countBy(sessions.map(replicaOf)) });
}

async function call() {
  let ok = 0, failed = 0, kept = 0;
  const moved = [], errors = [];
  await eachLimited(sessions.map((s, i) => i), 20, async (i) => {
    const before = sessions[i].transport.sessionId;
    const from = replicaOf(sessions[i]);
    try {
      try {
        await sessions[i].client.listTools();
      } catch (e) {
        if (!isGone(e)) throw e;
        await sessions[i].client.close().catch(() => {});
        sessions[i] = await connect();
        moved.push(from);
        await sessions[i].client.listTools();
      }
      ok++;
      if (sessions[i].transport.sessionId === before) kept++;
    } catch (e) {
      failed++;
      errors.push(String(e && e.message).slice(0, 200));
    }
  });
  say({ ok, failed, kept, moved: countBy(moved), by_replica: countBy(sessions.map(replicaOf)), errors: errors.slice(0, 5) });
}

async function slow(ms) {
  const calls = sessions.map((s) => s.client.request({ method: "slow", params: { ms } }, ResultSchema, { timeout: 120000 }));
  say({ sent: calls.length });
  const results = await Promise.allSettled(calls);
  const errors = results.filter((r) => r.status === "rejected").map((r) => String(r.reason && r.reason.message).slice(0, 200));
  say({ ok: results.length - errors.length, failed: errors.length, errors: errors.slice(0, 5) });
}

const lines = readline.createInterface({ input: process.stdin });
(async () => {
  for await (const line of lines) {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === "close") break;
    try {
      if (cmd === "open") await open(Number(arg));
      else if (cmd === "call") await call();
      else if (cmd === "slow") await slow(Number(arg));
    } catch (e) {
      say({ fatal: `${cmd}: ${e && e.stack}`, cause: String(e && e.cause) });
      process.exit(1);
    }
  }
  await Promise.allSettled(sessions.map((s) => s.transport.terminateSession().catch(() => {}).then(() => s.client.close())));
  process.exit(0);
})().catch((e) => {
  say({ fatal: String(e && e.stack) });
  process.exit(1);
});
