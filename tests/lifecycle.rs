//! Process handling and shutdown: signals, client EOF, stop sequence on stubborn trees, SIGHUP,
//! command-line errors, exit codes and the child's environment.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::*;

#[test]
fn client_eof_stops_everything_in_well_under_a_second() {
    let mut v = Visor::test_server(["--grandchild"]).spawn();
    v.initialize();
    let gc = v.request(1, "grandchild", json!({}))["result"]["pid"].as_i64().unwrap() as i32;
    let pgid = v.wait_generation(1);
    assert!(process_alive(gc));
    let start = Instant::now();
    v.close_stdin();
    let status = v.wait_exit(TIMEOUT);
    let took = start.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_millis(1000), "took {took:?}");
    assert!(group_members(pgid).is_empty(), "survivors in the server's group: {:?}", group_members(pgid));
    assert!(!process_alive(gc), "grandchild {gc} survived");
}

#[test]
fn client_eof_still_delivers_answers_already_in_flight() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"s","method":"slow","params":{"ms":300}}));
    v.close_stdin();
    assert_eq!(v.response(&json!("s"))["result"]["slept_ms"], json!(300));
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_cleanly() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    for i in 0..3 {
        v.send(&json!({"jsonrpc":"2.0","id":i,"method":"slow","params":{"ms":400}}));
    }
    v.request("sync", "echo", json!({}));
    v.signal(Signal::SIGTERM);
    v.wait_log("draining");
    let refused = v.request("late", "echo", json!({}));
    assert_eq!(refused["error"]["data"]["reason"], json!("shutting_down"), "{refused}");
    for i in 0..3 {
        assert_eq!(v.response(&json!(i))["result"]["slept_ms"], json!(400));
    }
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn drain_timeout_answers_what_is_left_with_an_error() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--drain-timeout", "200ms"]).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"s","method":"slow","params":{"ms":10000}}));
    v.request("sync", "echo", json!({}));
    v.signal(Signal::SIGINT);
    let e = v.response(&json!("s"));
    assert_eq!(e["error"]["data"]["reason"], json!("shutting_down"), "{e}");
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn a_second_signal_skips_the_waits_even_for_a_server_ignoring_sigterm() {
    let mut v = Visor::test_server(["--ignore-sigterm", "--ignore-eof"])
        .args(["--stop-grace", "10s", "--kill-after", "10s"])
        .spawn();
    v.initialize();
    let pgid = v.wait_generation(1);
    v.signal(Signal::SIGTERM);
    v.wait_log("draining");
    let start = Instant::now();
    v.signal(Signal::SIGTERM);
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
    assert!(start.elapsed() < Duration::from_secs(3), "second signal did not skip the waits");
    wait_for("the group to be gone", TIMEOUT, || group_members(pgid).is_empty().then_some(()));
}

#[test]
fn a_second_signal_ends_mcpvisor_even_when_its_event_loop_is_stuck() {
    // The fault hook blocks the event loop's thread when the first SIGTERM is handled.
    let mut v = Visor::test_server(["--ignore-sigterm", "--ignore-eof", "--grandchild"])
        .args(["--stop-grace", "10s", "--kill-after", "10s"])
        .spawn_with_env(&[("MCPVISOR_FAULT", "stall-on-signal")]);
    v.initialize();
    let pgid = v.wait_generation(1);
    v.signal(Signal::SIGTERM);
    v.wait_log("blocking the event loop");
    let start = Instant::now();
    v.signal(Signal::SIGTERM);
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(1), "an unclean exit says so");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    wait_for("the server's group to be gone", TIMEOUT, || group_members(pgid).is_empty().then_some(()));
    let err = v.stderr_text();
    assert!(err.contains("did not stop within 3s of a second signal"), "{err}");
}

#[test]
fn stop_sequence_escalates_to_sigkill_for_a_server_ignoring_sigterm() {
    let mut v = Visor::test_server(["--ignore-sigterm", "--ignore-eof"])
        .args(["--stop-grace", "100ms", "--kill-after", "200ms"])
        .spawn();
    v.initialize();
    let pgid = v.wait_generation(1);
    v.close_stdin();
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
    let log = v.log();
    assert!(log.contains("sending SIGTERM") && log.contains("sending SIGKILL"), "{log}");
    assert!(group_members(pgid).is_empty());
}

#[test]
fn a_grandchild_holding_stdout_does_not_stall_crash_handling_and_is_killed() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--backoff-initial", "10ms"]).spawn();
    v.initialize();
    let gc = v.request(1, "grandchild", json!({}))["result"]["pid"].as_i64().unwrap() as i32;
    let start = Instant::now();
    let e = v.request(2, "crash", json!({"code": 3}));
    assert_eq!(e["error"]["data"]["exit"], json!({"code": 3}), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2), "crash handling waited for the grandchild");
    wait_for("grandchild killed with the group", TIMEOUT, || (!process_alive(gc)).then_some(()));
    assert!(v.request(3, "echo", json!({}))["result"].is_object());
}

#[test]
fn wrapper_shells_leave_no_survivors() {
    // Not the last command, so the shell forks instead of exec'ing: sh → server.
    let script = format!("{}; echo done", test_server_bin().display());
    let mut v = Visor::command(["sh", "-c", &script]).spawn();
    let pgid = v.wait_generation(1);
    wait_for("server under the shell", TIMEOUT, || (group_members(pgid).len() >= 2).then_some(()));
    v.signal(Signal::SIGTERM);
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
    wait_for("no survivors", TIMEOUT, || group_members(pgid).is_empty().then_some(()));
}

#[test]
fn sighup_restarts_gracefully_without_counting_against_the_limit() {
    let (_rec_dir, rec) = record_file();
    let mut v = Visor::test_server(["--record", &rec]).args(["--max-restarts", "0"]).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"s","method":"slow","params":{"ms":300}}));
    v.request("sync", "echo", json!({}));
    v.signal(Signal::SIGHUP);
    v.wait_log("restarting the server gracefully");
    // In flight work finishes on the old server; new work waits for the new one.
    v.send(&json!({"jsonrpc":"2.0","id":"n","method":"echo","params":{}}));
    assert_eq!(v.response(&json!("s"))["result"]["slept_ms"], json!(300));
    let old = v.server_pids()[0];
    let r = v.response(&json!("n"));
    assert!(r["result"].is_object(), "{r}");
    assert_ne!(r["result"]["pid"], json!(old));
    v.wait_generation(2);
    // With --max-restarts 0 any counted restart would have failed the server.
    assert!(v.request(1, "echo", json!({}))["result"].is_object());
    let replayed = recorded(&rec).into_iter().filter(|m| m["method"] == json!("initialize")).count();
    assert_eq!(replayed, 2);
}

#[test]
fn environment_cwd_and_systemd_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_path(dir.path(), "env.txt");
    let script = format!("env > {out}; pwd >> {out}; exec {}", test_server_bin().display());
    let mut v = Visor::command(["sh", "-c", &script]).args(["--env", "MY_KEY=a=b", "--cwd", "/tmp"]).spawn_with_env(&[
        ("NOTIFY_SOCKET", "/run/x"),
        ("WATCHDOG_USEC", "1"),
        ("LISTEN_FDS", "1"),
        ("KEEP_ME", "yes"),
    ]);
    v.initialize();
    let text = wait_for("env dump", TIMEOUT, || std::fs::read_to_string(&out).ok().filter(|s| s.contains("/tmp")));
    assert!(text.contains("MY_KEY=a=b"));
    assert!(text.contains("KEEP_ME=yes"));
    assert!(
        !text.contains("NOTIFY_SOCKET") && !text.contains("WATCHDOG_USEC") && !text.contains("LISTEN_FDS"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "/tmp"));
}

fn mcpvisor(args: &[&str]) -> std::process::Output {
    Command::new(mcpvisor_bin()).args(args).stdin(Stdio::null()).output().expect("run mcpvisor")
}

#[test]
fn bad_usage_is_one_line_on_stderr_and_status_2() {
    for args in [
        &["run", "server-without-dashes"][..],
        &["run"][..],
        &["run", "--no-such-option", "--", "x"][..],
        &["run", "--ping-interval", "soon", "--", "x"][..],
        &["frobnicate"][..],
    ] {
        let out = mcpvisor(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("mcpvisor: "), "{err}");
    }
    let err = String::from_utf8_lossy(&mcpvisor(&["run", "npx", "server"]).stderr).into_owned();
    assert!(err.contains("after `--`"), "{err}");
    // With nothing after `run`, the sentence names what is missing instead of stopping short.
    let err = String::from_utf8_lossy(&mcpvisor(&["run"]).stderr).into_owned();
    assert!(err.contains("not provided: <COMMAND>...; put the server command after `--`"), "{err}");
}

#[test]
fn a_command_that_cannot_start_is_reported_with_status_3() {
    let out = mcpvisor(&["run", "--", "/definitely/not/here/mcp-server"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("command not found") && err.contains("/definitely/not/here/mcp-server"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-executable");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let out = mcpvisor(&["run", "--", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
}

#[test]
fn a_client_that_stops_reading_is_gone_and_everything_stops() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(mcpvisor_bin())
        .args(["run", "--log-file"])
        .arg(&log)
        .arg("--")
        .arg(test_server_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the client closes its end of our stdout
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}});
    let _ = writeln!(stdin, "{init}");
    let status = wait_for("mcpvisor to exit", TIMEOUT, || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("client stopped reading"), "{text}");
    let pid = pids_in_log(&text)[0];
    wait_for("server stopped", TIMEOUT, || group_members(pid).is_empty().then_some(()));
}

#[test]
fn the_log_file_rotates_by_size_and_keeps_log_max_files() {
    let mut v =
        Visor::test_server(Vec::<String>::new()).args(["--log-max-size", "2KiB", "--log-max-files", "3"]).spawn();
    v.initialize();
    v.request(1, "stderr", json!({"lines": 200}));
    v.wait_log("log line 199");
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", v.log_path.display()));
    assert!(rotated(2).exists() && !rotated(3).exists(), "the log and two rotated files are kept");
    for path in [v.log_path.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0 && size <= 2048, "{}: {size} bytes", path.display());
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut v = Visor::test_server(["--stderr-lines", "2"]).args(["--log-format", "json"]).spawn();
    v.initialize();
    v.wait_log("startup log line 1");
    for line in v.log().lines() {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed.get("level").is_some(), "{line}");
    }
}

#[test]
fn a_flood_of_stderr_does_not_stall_the_relay() {
    let mut v = Visor::test_server(Vec::<String>::new()).spawn();
    v.initialize();
    v.send(&json!({"jsonrpc":"2.0","id":"flood","method":"stderr","params":{"lines":50000}}));
    for i in 0..20 {
        assert!(v.request(i, "echo", json!({"i": i}))["result"].is_object());
    }
    v.response(&json!("flood"));
}

#[test]
fn completions_and_man_pages_come_from_the_cli_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = mcpvisor(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("mcpvisor") && text.contains("max-restarts"), "{shell} completion lacks run options");
    }
    let top = String::from_utf8(mcpvisor(&["man"]).stdout).unwrap();
    assert!(top.contains(".TH mcpvisor 1") && top.contains("status"), "{top}");
    let run = String::from_utf8(mcpvisor(&["man", "run"]).stdout).unwrap();
    assert!(run.contains(".TH mcpvisor-run 1") && run.contains("max\\-restarts"), "{run}");
    assert_eq!(mcpvisor(&["man", "nope"]).status.code(), Some(2));
}

#[test]
fn a_config_file_configures_run_and_the_command_line_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_rec_dir, rec) = record_file();
    let cfg = dir.path().join("mcpvisor.toml");
    let server = test_server_bin().display().to_string();
    std::fs::write(
        &cfg,
        format!("command = [{server:?}, \"--record\", {rec:?}]\nname = \"from-file\"\nmax-restarts = 0\n[env]\nFROM_FILE = \"1\"\n"),
    )
    .unwrap();
    // No command after `--`: the file's is used. --max-restarts on the command line wins over 0.
    let mut v = Visor::command(Vec::<String>::new())
        .args(["--config", cfg.to_str().unwrap(), "--max-restarts", "5", "--backoff-initial", "10ms"])
        .spawn_without_command();
    v.initialize();
    v.wait_log("control socket ready");
    assert!(v.log().contains("name=\"from-file\""), "{}", v.log());
    v.request(1, "crash", json!({}));
    // With the file's max-restarts = 0 this would have failed the server.
    assert!(v.request(2, "echo", json!({}))["result"].is_object());

    std::fs::write(&cfg, "command = [\"x\"]\nmax-restarts = \"many\"\n").unwrap();
    let out = mcpvisor(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mcpvisor.toml:2: `max-restarts`"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_grandchild_that_left_the_group_does_not_stall_restarts_and_is_killed() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--backoff-initial", "10ms"]).spawn();
    v.initialize();
    let gc = v.request(1, "setsid_grandchild", json!({}))["result"]["pid"].as_i64().unwrap() as i32;
    wait_for("the grandchild's own session", TIMEOUT, || {
        (mcpvisor::process::procfs::process(gc)?.session == gc).then_some(())
    });
    let start = Instant::now();
    let e = v.request(2, "crash", json!({"code": 3}));
    assert_eq!(e["error"]["data"]["exit"], json!({"code": 3}), "{e}");
    assert!(v.request(3, "echo", json!({}))["result"].is_object());
    assert!(start.elapsed() < Duration::from_secs(2), "the restart waited for the grandchild's pipes");
    // Out of the group, so the group kill misses it; mcpvisor (a subreaper) inherits and kills it.
    wait_for("the escaped grandchild killed", TIMEOUT, || (!process_alive(gc)).then_some(()));
    v.close_stdin();
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));
}

#[test]
fn a_server_that_closes_stdout_but_keeps_running_is_replaced() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--backoff-initial", "10ms"]).spawn();
    v.initialize();
    let first = v.request(1, "echo", json!({}))["result"]["pid"].clone();
    assert!(v.request(2, "close_stdout", json!({}))["result"].is_object());
    v.wait_generation(2);
    let r = v.request(3, "echo", json!({}));
    assert!(r["result"]["pid"].is_number() && r["result"]["pid"] != first, "{r}");
    let pid = first.as_i64().unwrap() as i32;
    wait_for("the old server stopped", TIMEOUT, || (!process_alive(pid)).then_some(()));
}

#[test]
fn a_server_dying_mid_line_gets_its_request_an_error_and_no_half_line_reaches_stdout() {
    let mut v = Visor::test_server(Vec::<String>::new()).args(["--backoff-initial", "10ms"]).spawn();
    v.initialize();
    // The half line is not JSON-RPC: it is diverted, and as it names request 5, that gets an error.
    let e = v.request(5, "half_line", json!({}));
    assert_eq!(e["error"]["code"], json!(-32603), "{e}");
    v.wait_generation(2);
    assert!(v.request(6, "echo", json!({}))["result"].is_object());
    assert!(v.stdout_seen.iter().all(|l| !l.contains("partial")), "{:?}", v.stdout_seen);
}
