//! Interop: real MCP clients (the Python `mcp` SDK and the TypeScript SDK) through mcpvisor to
//! real servers from the registries (`@modelcontextprotocol/server-everything`, `mcp-server-time`),
//! each with a `kill -9` of the server mid-session after which the client's calls still succeed.
//!
//! The peers are installed by `scripts/setup-interop` (which `scripts/test` runs) into
//! `target/interop`. Without them these tests print why and pass, unless
//! `MCPVISOR_REQUIRE_INTEROP=1` is set (as `scripts/test` and CI do), which makes them fail.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use support::daemon::Daemon;
use support::*;

fn interop_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MCPVISOR_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop"));
    if dir.join(".installed").exists() {
        return Some(dir);
    }
    let why = format!("interop peers not installed in {} (run scripts/setup-interop)", dir.display());
    assert!(std::env::var_os("MCPVISOR_REQUIRE_INTEROP").is_none(), "{why}");
    eprintln!("skipping: {why}");
    None
}

enum Peer {
    Python,
    TypeScript,
}

fn client_command(peer: Peer, dir: &std::path::Path, log: &std::path::Path, server: &[String]) -> Command {
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    let mut cmd = match peer {
        Peer::Python => {
            let mut c = Command::new(dir.join("venv/bin/python"));
            c.arg(scripts.join("python_client.py"));
            c
        }
        Peer::TypeScript => {
            let mut c = Command::new("node");
            c.arg(scripts.join("ts_client.cjs")).arg(dir);
            c
        }
    };
    cmd.arg(mcpvisor_bin()).arg(log).arg("--").args(server);
    cmd
}

/// Runs `peer` against `server` through `mcpvisor run` (with `standby`, a warm spare) and checks
/// it succeeded; mcpvisor's log.
fn run_client_through_run(peer: Peer, server: &[String], standby: bool) -> Option<String> {
    let dir = interop_dir()?;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("mcpvisor.log");
    let mut client = client_command(peer, &dir, &log, server);
    if standby {
        client.env("MCPVISOR_STANDBY", "1");
    }
    let out = client.output().expect("run the client");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "client failed\nstdout:\n{}\nstderr:\n{}\nmcpvisor log:\n{log_text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    Some(log_text)
}

/// Waits until the process group of each of `pids` is gone.
fn wait_groups_gone(pids: impl IntoIterator<Item = i32>) {
    for pid in pids {
        wait_for("server group gone", TIMEOUT, || group_members(pid).is_empty().then_some(()));
    }
}

fn run_client(peer: Peer, server: &[String]) {
    let Some(log_text) = run_client_through_run(peer, server, false) else { return };
    // The client closed the session: no generation of the server may survive.
    let pids = pids_in_log(&log_text);
    assert_eq!(pids.len(), 2, "{log_text}");
    wait_groups_gone(pids);
}

/// As [`run_client`], with a warm spare (`--standby 1`) that must take over from the killed
/// server; every process, spares included, is gone after the client leaves.
fn run_client_with_standby(peer: Peer, server: &[String]) {
    let Some(log_text) = run_client_through_run(peer, server, true) else { return };
    assert!(log_text.contains("spare promoted"), "{log_text}");
    let spares: Vec<i32> = log_text
        .lines()
        .filter(|l| l.contains("spare started"))
        .filter_map(|l| l.split("pid=").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!spares.is_empty(), "{log_text}");
    wait_groups_gone(pids_in_log(&log_text).into_iter().chain(spares));
}

fn everything_via_npx() -> Vec<String> {
    // npx → sh → node: the wrapper chain that signalling a single pid gets wrong.
    let dir = interop_dir().unwrap_or_default();
    vec!["sh".into(), "-c".into(), format!("cd '{}' && exec npx --no-install mcp-server-everything", dir.display())]
}

fn everything_node() -> Vec<String> {
    let dir = interop_dir().unwrap_or_default();
    vec![
        "node".into(),
        dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js").display().to_string(),
    ]
}

fn time_server() -> Vec<String> {
    let dir = interop_dir().unwrap_or_default();
    vec![dir.join("venv/bin/mcp-server-time").display().to_string()]
}

#[test]
fn python_client_to_server_everything_via_npx() {
    run_client(Peer::Python, &everything_via_npx());
}

#[test]
fn python_client_to_server_everything_via_npx_with_a_warm_spare() {
    run_client_with_standby(Peer::Python, &everything_via_npx());
}

#[test]
fn typescript_client_to_server_everything_via_npx_with_a_warm_spare() {
    run_client_with_standby(Peer::TypeScript, &everything_via_npx());
}

#[test]
fn python_client_to_mcp_server_time() {
    run_client(Peer::Python, &time_server());
}

#[test]
fn typescript_client_to_server_everything() {
    run_client(Peer::TypeScript, &everything_node());
}

#[test]
fn typescript_client_to_mcp_server_time() {
    run_client(Peer::TypeScript, &time_server());
}

/// How a client reaches a daemon's server.
#[derive(PartialEq)]
enum Via {
    /// `mcpvisor connect NAME` as its stdio server command.
    Connect,
    /// Streamable HTTP to the daemon's front.
    Http,
}

/// The client reaches a daemon serving `server` as NAME with `share` (and kills NAME's process
/// mid-session, as above); returns what the client printed (empty when interop is skipped).
fn run_client_via_daemon(peer: Peer, server: &[String], share: &str, via: Via) -> String {
    let Some(dir) = interop_dir() else { return String::new() };
    // An HTTP client may leave without ending its session: it then expires quickly.
    let front = if via == Via::Http { "http = \"127.0.0.1:0\"\nsession-idle-timeout = \"1s\"\n" } else { "" };
    let table = format!("{front}[servers.it]\ncommand = {server:?}\nshare = {share:?}\nbackoff-initial = \"50ms\"\n");
    let mut daemon = Daemon::start(&table, &["it"]);
    let mut client = client_command(peer, &dir, &daemon.log_path, &["unused".into()]);
    match via {
        Via::Connect => client.env("MCPVISOR_CONNECT", "it").env("MCPVISOR_RUNTIME_DIR", &daemon.runtime_dir),
        Via::Http => client.env("MCPVISOR_URL", format!("http://{}/mcp/it", daemon.http_addr())),
    };
    let out = client.output().expect("run the client");
    assert!(
        out.status.success(),
        "client failed\nstdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let status = daemon.wait_status("it", "the client gone", |s| s["clients"] == json!(0));
    let processes = status["processes"].as_array().cloned().unwrap_or_default();
    // A per-client process ends with its client; a shared one waits for the next client, as
    // does the process of stateless-era requests (the Python client probes for that era first).
    assert!(processes.iter().all(|p| p["client"].is_null()), "{status}");
    match (share, &via) {
        ("shared", _) => assert!(!processes.is_empty(), "{status}"),
        (_, Via::Connect) => assert!(processes.is_empty(), "{status}"),
        (_, Via::Http) => assert!(processes.len() <= 1, "{status}"),
    }
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(TIMEOUT).code(), Some(0));
    wait_groups_gone(pids_in_log(&daemon.log()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn python_client_through_connect_to_a_per_client_server_everything() {
    run_client_via_daemon(Peer::Python, &everything_via_npx(), "per-client", Via::Connect);
}

#[test]
fn python_client_through_connect_to_a_shared_mcp_server_time() {
    run_client_via_daemon(Peer::Python, &time_server(), "shared", Via::Connect);
}

#[test]
fn typescript_client_through_connect_to_a_per_client_server_everything() {
    run_client_via_daemon(Peer::TypeScript, &everything_node(), "per-client", Via::Connect);
}

#[test]
fn typescript_client_through_connect_to_a_shared_mcp_server_time() {
    run_client_via_daemon(Peer::TypeScript, &time_server(), "shared", Via::Connect);
}

#[test]
fn python_client_over_http_to_a_per_client_server_everything() {
    run_client_via_daemon(Peer::Python, &everything_node(), "per-client", Via::Http);
}

#[test]
fn python_client_over_http_to_a_shared_mcp_server_time() {
    let printed = run_client_via_daemon(Peer::Python, &time_server(), "shared", Via::Http);
    // The SDK's high-level client negotiates the stateless era with a server that speaks it.
    assert!(printed.is_empty() || printed.contains("protocol 2026-07-28"), "{printed}");
}

#[test]
fn typescript_client_over_http_to_a_per_client_server_everything() {
    run_client_via_daemon(Peer::TypeScript, &everything_node(), "per-client", Via::Http);
}

#[test]
fn typescript_client_over_http_to_a_shared_mcp_server_time() {
    run_client_via_daemon(Peer::TypeScript, &time_server(), "shared", Via::Http);
}

#[test]
fn the_mcp_inspector_cli_over_http_lists_and_calls_tools() {
    let Some(dir) = interop_dir() else { return };
    let everything = everything_node();
    let time = time_server();
    let table = format!(
        "http = \"127.0.0.1:0\"\n[servers.everything]\ncommand = {everything:?}\n[servers.time]\ncommand = {time:?}\nshare = \"shared\"\n"
    );
    let daemon = Daemon::start(&table, &["everything", "time"]);
    let addr = daemon.http_addr();
    let inspector = |url: String, args: &[&str]| {
        let out = Command::new(dir.join("node_modules/.bin/mcp-inspector"))
            .arg("--cli")
            .arg(url)
            .args(["--transport", "http"])
            .args(args)
            .output()
            .expect("run the inspector");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}\n{}\n{}", String::from_utf8_lossy(&out.stderr), daemon.log());
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    };
    // The Inspector appends /mcp to a URL that does not end with it: /NAME/mcp is the same endpoint.
    let tools = inspector(format!("http://{addr}/everything/mcp"), &["--method", "tools/list"]);
    assert!(tools["tools"].as_array().is_some_and(|t| t.iter().any(|t| t["name"] == json!("echo"))), "{tools}");
    let call = ["--method", "tools/call", "--tool-name", "get_current_time", "--tool-arg", "timezone=UTC"];
    let now = inspector(format!("http://{addr}/time/mcp"), &call);
    assert_eq!(now["structuredContent"]["timezone"], json!("UTC"), "{now}");
}

#[test]
fn typescript_client_over_http_gets_progress_and_answers_sampling_of_server_everything() {
    let Some(dir) = interop_dir() else { return };
    let table = format!("http = \"127.0.0.1:0\"\n[servers.everything]\ncommand = {:?}\n", everything_node());
    let daemon = Daemon::start(&table, &["everything"]);
    let url = format!("http://{}/mcp/everything", daemon.http_addr());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/ts_http_traffic.cjs");
    let out = Command::new("node").arg(script).arg(&dir).arg(url).output().expect("run node");
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
}
