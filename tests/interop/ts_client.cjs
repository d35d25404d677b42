// Interop check: the TypeScript SDK's stdio client through mcpvisor to a real server, with a
// kill -9 of the server mid-session. Usage: node ts_client.cjs INTEROP_DIR MCPVISOR LOG -- SERVER...
// With MCPVISOR_CONNECT=NAME the client runs `mcpvisor connect NAME` (a daemon's server; LOG is
// the daemon's log) instead of `mcpvisor run -- SERVER...`; with MCPVISOR_URL=URL it speaks
// Streamable HTTP (StreamableHTTPClientTransport) to a daemon's HTTP front at URL. With
// MCPVISOR_STANDBY=1, `run` keeps a spare (--standby 1): the client waits until it is warm before
// the kill, and the spare must take over (no new server start).
"use strict";
const path = require("path");
const fs = require("fs");
const { createRequire } = require("module");

const [interopDir, mcpvisor, log, dashdash, ...server] = process.argv.slice(2);
if (dashdash !== "--" || server.length === 0) throw new Error("usage: ts_client.cjs DIR MCPVISOR LOG -- SERVER...");
const req = createRequire(path.join(interopDir, "node_modules", "noop.js"));
const { Client } = req("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = req("@modelcontextprotocol/sdk/client/stdio.js");

function logText() {
  return fs.existsSync(log) ? fs.readFileSync(log, "utf8") : "";
}

function serverPids() {
  const text = logText();
  return [...text.matchAll(/server started .*?pid=(\d+)/g)].map((m) => Number(m[1]));
}

function assert(cond, msg) {
  if (!cond) throw new Error("assertion failed: " + msg);
}

async function callSomeTool(client, tools) {
  const names = tools.tools.map((t) => t.name);
  if (names.includes("echo")) return client.callTool({ name: "echo", arguments: { message: "hi" } });
  return client.callTool({ name: "get_current_time", arguments: { timezone: "UTC" } });
}

(async () => {
  const connect = process.env.MCPVISOR_CONNECT;
  const standby = Boolean(process.env.MCPVISOR_STANDBY);
  const url = process.env.MCPVISOR_URL;
  const { StreamableHTTPClientTransport } = req("@modelcontextprotocol/sdk/client/streamableHttp.js");
  const transport = url ? new StreamableHTTPClientTransport(new URL(url)) : new StdioClientTransport({
    command: mcpvisor,
    args: connect
      ? ["connect", connect]
      : ["run", "--log-file", log, "--log-level", "debug", "--backoff-initial", "50ms",
         ...(standby ? ["--standby", "1"] : []), "--", ...server],
    // `connect` finds the daemon through MCPVISOR_RUNTIME_DIR, which the default environment lacks.
    env: connect ? { ...process.env } : undefined,
    stderr: "inherit",
  });
  const client = new Client({ name: "mcpvisor-interop", version: "1.0.0" });
  await client.connect(transport);
  const tools = await client.listTools();
  assert(tools.tools.length > 0, "tools listed");
  const first = await callSomeTool(client, tools);
  assert(!first.isError, "first call ok");

  if (standby) {
    const deadline = Date.now() + 60000;
    while (!logText().includes("spare warm")) {
      assert(Date.now() < deadline, "no warm spare within 60 s");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const pids = serverPids();
  const started = pids.length;
  // The whole group (npx → sh → node), as the Python client does: killing npx alone leaves its
  // node child answering for a moment, and a call in that moment is lost with it.
  process.kill(-pids[pids.length - 1], "SIGKILL");
  const t0 = Date.now();
  const again = await client.listTools();
  assert(again.tools.length === tools.tools.length, "same tools after the restart");
  const second = await callSomeTool(client, again);
  assert(!second.isError, "call after kill -9 ok: " + JSON.stringify(second));
  if (standby) {
    assert(logText().includes("spare promoted"), "the spare took over");
    assert(serverPids().length === started, "no server start: " + serverPids());
  } else {
    assert(serverPids().length === started + 1, "exactly one restart: " + serverPids());
  }
  console.log(`ok: ${tools.tools.length} tools, recovered in ${Date.now() - t0} ms`);
  await client.close();
})().catch((e) => {
  console.error("FAILED:", e);
  process.exit(1);
});
