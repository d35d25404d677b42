// Drives the daemon's status page in headless Chromium (Debian's /usr/bin/chromium, through
// playwright-core) for tests/status_page.rs, and takes the README's screenshot.
// Usage: node check.cjs INTEROP_DIR URL [--screenshot PATH]
// Checks, without ever reloading the page: every server of the daemon has a row; server `broken`
// (at its restart limit) shows as failed with its last stderr line; after a kill -9 of server
// `steady`'s process (found through /api/status), its row turns to backoff or restarting, then
// back to ready. Prints "ok" on success.
"use strict";
const path = require("path");
const { createRequire } = require("module");

const [interopDir, url, flag, shot] = process.argv.slice(2);
const req = createRequire(path.join(interopDir, "node_modules", "noop.js"));
const { chromium } = req("playwright-core");

const stateOf = (page, name) => page.getAttribute(`tr[data-server="${name}"]`, "data-state");

async function waitState(page, name, states, what) {
  const list = JSON.stringify(states);
  await page.waitForFunction(
    ([n, s]) => {
      const row = document.querySelector(`tr[data-server="${n}"]`);
      return row && s.includes(row.dataset.state);
    },
    [name, states],
    { timeout: 60000, polling: 50 },
  ).catch((e) => { throw new Error(`${what}: ${name} never in ${list}: ${e.message}`); });
}

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 420 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(url);
    const api = new URL("/api/status", url).toString();
    const servers = await (await fetch(api)).json();
    for (const s of servers) await page.waitForSelector(`tr[data-server="${s.name}"]`, { timeout: 30000 });

    if (shot) {
      await page.waitForTimeout(2500); // two refreshes, so the rates have a value
      await page.screenshot({ path: shot, fullPage: true });
      console.log("ok");
      return;
    }
    await waitState(page, "broken", ["failed"], "the restart limit");
    const last = await page.textContent(`tr[data-server="broken"] .stderr-last`);
    if (!/exiting at start/.test(last || "")) throw new Error(`broken's last stderr line: ${last}`);

    await waitState(page, "steady", ["ready"], "start");
    const steady = (await (await fetch(api)).json()).find((s) => s.name === "steady");
    const pid = steady.processes[0].pid;
    process.kill(-pid, "SIGKILL");
    await waitState(page, "steady", ["backoff", "restarting", "starting"], "after kill -9");
    await waitState(page, "steady", ["ready"], "after the restart");
    const now = (await (await fetch(api)).json()).find((s) => s.name === "steady");
    if (now.processes[0].pid === pid) throw new Error("the same process after kill -9");
    if (errors.length) throw new Error("errors on the page: " + errors.join("; "));
    console.log("ok", JSON.stringify({ servers: servers.map((s) => s.name), killed: pid, stateAfter: await stateOf(page, "steady") }));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error("FAILED:", e && e.stack);
  process.exit(1);
});
