// Interop check: the TypeScript SDK over Streamable HTTP, through mcpvisor's front, to
// server-everything, with the traffic that needs more than request and response: progress
// notifications on a tool call's stream, and a sampling request of the server's that the client
// answers by POST. Usage: node ts_http_traffic.cjs INTEROP_DIR URL
"use strict";
const path = require("path");
const { createRequire } = require("module");

const [interopDir, url] = process.argv.slice(2);
const req = createRequire(path.join(interopDir, "node_modules", "noop.js"));
const { Client } = req("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = req("@modelcontextprotocol/sdk/client/streamableHttp.js");
const { CreateMessageRequestSchema } = req("@modelcontextprotocol/sdk/types.js");

(async () => {
  const client = new Client({ name: "mcpvisor-http-traffic", version: "1.0.0" }, { capabilities: { sampling: {} } });
  client.setRequestHandler(CreateMessageRequestSchema, async (request) => ({
    model: "stub",
    role: "assistant",
    content: { type: "text", text: "sampled: " + request.params.messages[0].content.text },
  }));
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));

  let progress = 0;
  const long = await client.callTool(
    { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 3 } },
    undefined,
    { onprogress: () => progress++ },
  );
  if (long.isError || progress < 3) throw new Error(`progress notifications: ${progress}; ${JSON.stringify(long)}`);

  const tools = await client.listTools();
  if (!tools.tools.some((t) => t.name === "trigger-sampling-request")) {
    throw new Error("no sampling tool: " + tools.tools.map((t) => t.name));
  }
  const sampled = await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hello" } });
  const text = JSON.stringify(sampled);
  if (sampled.isError || !text.includes("sampled: ")) throw new Error("sampling: " + text);
  console.log(`ok: ${progress} progress notifications, the sampling request answered`);
  await client.close();
})().catch((e) => {
  console.error("FAILED:", e);
  process.exit(1);
});
