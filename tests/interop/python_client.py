"""Interop check: the Python `mcp` SDK's high-level client through mcpvisor to a real server,
with a kill -9 of the server mid-session.

The client runs in auto mode: it probes `server/discover` and falls back to `initialize` on a
handshake-era server, so the same script covers both protocol eras.

Usage: python python_client.py MCPVISOR LOG -- SERVER...
With MCPVISOR_STANDBY=1, `run` keeps a spare (--standby 1): the client waits until the spare is
warm before the kill, and the spare must take over (no new server start).
With MCPVISOR_CONNECT=NAME the client runs `mcpvisor connect NAME` (a daemon's server; LOG is the
daemon's log) instead of `mcpvisor run -- SERVER...`; with MCPVISOR_URL=URL it speaks Streamable
HTTP to a daemon's HTTP front at URL.
"""

import asyncio
import os
import re
import signal
import sys
import time

from mcp.client.client import Client
from mcp.client.stdio import StdioServerParameters


def log_text(log):
    try:
        with open(log) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def server_pids(log):
    try:
        with open(log) as f:
            return [int(p) for p in re.findall(r"server started .*?pid=(\d+)", f.read())]
    except FileNotFoundError:
        return []


async def call_some_tool(client, tools):
    names = [t.name for t in tools.tools]
    if "echo" in names:
        return await client.call_tool("echo", {"message": "hi"})
    return await client.call_tool("get_current_time", {"timezone": "UTC"})


async def main(mcpvisor, log, server):
    connect = os.environ.get("MCPVISOR_CONNECT")
    url = os.environ.get("MCPVISOR_URL")
    if url:
        params = url
    elif connect:
        # `connect` finds the daemon through MCPVISOR_RUNTIME_DIR, not in the default environment.
        params = StdioServerParameters(command=mcpvisor, args=["connect", connect], env=dict(os.environ))
    else:
        standby = ["--standby", "1"] if os.environ.get("MCPVISOR_STANDBY") else []
        args = ["run", "--log-file", log, "--log-level", "debug", "--backoff-initial", "50ms", *standby, "--", *server]
        params = StdioServerParameters(command=mcpvisor, args=args)
    async with Client(params) as client:
        tools = await client.list_tools()
        assert tools.tools, "no tools listed"
        first = await call_some_tool(client, tools)
        assert not first.is_error, first

        # The whole tree (npx → sh → node): killing only npx would leave node answering briefly.
        # Over HTTP a stateless-era probe may have started the server's stateless process too.
        standby = bool(os.environ.get("MCPVISOR_STANDBY"))
        if standby:
            deadline = time.monotonic() + 60
            while "spare warm" not in log_text(log):
                assert time.monotonic() < deadline, "no warm spare within 60 s"
                await asyncio.sleep(0.05)
        started = len(server_pids(log))
        os.killpg(server_pids(log)[-1], signal.SIGKILL)
        t0 = time.monotonic()
        again = await client.list_tools()
        assert len(again.tools) == len(tools.tools), "tool list changed after the restart"
        second = await call_some_tool(client, again)
        assert not second.is_error, second
        if standby:
            assert "spare promoted" in log_text(log), "the spare did not take over"
            assert len(server_pids(log)) == started, f"a server was started instead: {server_pids(log)}"
        else:
            assert len(server_pids(log)) == started + 1, f"expected exactly one restart: {server_pids(log)}"
        print(f"ok: protocol {client.protocol_version}, {len(tools.tools)} tools, "
              f"recovered in {int((time.monotonic() - t0) * 1000)} ms")


if __name__ == "__main__":
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit("usage: python_client.py MCPVISOR LOG -- SERVER...")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[4:]))
