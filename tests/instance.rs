//! Instances driven in-process, as a daemon hosts them: an in-memory client, the real test
//! server, and the status snapshot (through the instance's handle) as the only source of truth.
//! Several instances share the process, its runtime and its reaper, which is what proves that one
//! instance's server ending never touches another's processes.

mod support;

#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{config, run, wait_for, Harness};
use mcpvisor::instance::{Command, Outcome, Reply};
use mcpvisor::observe::status::{ExitCause, State};
use mcpvisor::process::procfs;
use serde_json::json;
use support::process_alive;

#[test]
fn a_crash_is_answered_and_the_session_rebuilt_on_the_next_generation() {
    run(async {
        let (_dir, record) = support::record_file();
        let mut h = Harness::start("crashy", config(&["--backoff-initial", "10ms"], &["--record", &record]));
        h.initialize().await;
        let (first_pid, generation) = h.ready_server().await;
        assert_eq!(generation, 1);

        let e = h.request(1, "crash", json!({"code": 3})).await;
        assert_eq!(e["error"]["code"], json!(-32603), "{e}");
        assert_eq!(e["error"]["data"]["reason"], json!("server_crashed"), "{e}");
        assert_eq!(e["error"]["data"]["exit"], json!({"code": 3}), "{e}");
        let status = h
            .wait_status("generation 2 ready", |s| s.is_ready() && s.child.as_ref().is_some_and(|c| c.generation == 2))
            .await;
        assert_eq!(status.restarts.in_window, 1);
        let last = status.last_exit.expect("a last exit");
        assert_eq!((last.cause, last.code), (ExitCause::Exited, Some(3)));

        let r = h.request(2, "echo", json!({})).await;
        assert!(r["result"]["pid"].is_number() && r["result"]["pid"] != json!(first_pid), "{r}");
        // The client initialized once; the replay initialized the second server once.
        let initializes = support::recorded(&record).iter().filter(|m| m["method"] == json!("initialize")).count();
        assert_eq!(initializes, 2);
        assert_eq!(h.close().await, Outcome::Stopped);
    })
}

#[test]
fn a_batch_refused_at_once_is_answered_as_one_array() {
    run(async {
        let mut h = Harness::start("failing", config(&["--max-restarts", "0"], &["--exit-at-start", "1"]));
        h.wait_status("the server failed", |s| s.state == State::Failed).await;
        // Each request is refused while the batch is still being read; none may be lost.
        h.send(&json!([
            {"jsonrpc": "2.0", "id": "a", "method": "tools/list"},
            {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
            {"jsonrpc": "2.0", "id": "b", "method": "tools/list"},
        ]));
        let answer = h.recv().await;
        let items = answer.as_array().unwrap_or_else(|| panic!("one array: {answer}"));
        let ids: Vec<_> = items.iter().map(|i| i["id"].clone()).collect();
        assert_eq!(ids, [json!("a"), json!("b")], "{answer}");
        assert!(items.iter().all(|i| i["error"]["data"]["reason"] == json!("restart_limit")), "{answer}");
        assert_eq!(h.close().await, Outcome::Stopped);
    })
}

#[test]
fn max_inflight_queues_requests_and_status_shows_them() {
    run(async {
        let mut h = Harness::start("narrow", config(&["--max-inflight", "1"], &[]));
        h.initialize().await;
        h.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "slow", "params": {"ms": 400}}));
        h.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "echo", "params": {}}));
        h.wait_status("one in flight, one queued", |s| s.in_flight == 1 && s.queued == 1).await;
        assert_eq!(h.recv().await["id"], json!(1), "the queued request waits for the first answer");
        assert_eq!(h.recv().await["id"], json!(2));
        let status = h.status().await;
        assert_eq!((status.in_flight, status.queued), (0, 0));
        assert_eq!(h.close().await, Outcome::Stopped);
    })
}

#[test]
fn an_idle_server_that_is_up_is_ready_before_any_client_message() {
    run(async {
        let mut h = Harness::start("idle", config(&[], &[]));
        let pid = tokio::time::timeout(harness::TIMEOUT, h.summary.wait_for(|s| s.state == State::Ready))
            .await
            .expect("ready in time")
            .expect("the instance runs")
            .pid;
        assert!(pid.is_some());
        assert_eq!(h.status().await.state, State::Ready);
        assert_eq!(h.close().await, Outcome::Stopped);
    })
}

#[test]
fn a_stop_drains_in_flight_requests_and_refuses_new_ones() {
    run(async {
        let mut h = Harness::start("draining", config(&[], &[]));
        h.initialize().await;
        h.send(&json!({"jsonrpc": "2.0", "id": "s", "method": "slow", "params": {"ms": 300}}));
        h.wait_status("the slow request in flight", |s| s.in_flight == 1).await;
        assert!(matches!(h.call(Command::Stop { why: "test" }).await, Reply::Done(_)));
        assert_eq!(h.status().await.state, State::Draining);
        let late = h.request("late", "echo", json!({})).await;
        assert_eq!(late["error"]["data"]["reason"], json!("shutting_down"), "{late}");
        assert_eq!(h.response(&json!("s")).await["result"]["slept_ms"], json!(300));
        assert_eq!(h.finish().await, Outcome::Stopped);
    })
}

#[test]
fn a_second_terminate_skips_every_wait() {
    run(async {
        let cfg = config(&["--stop-grace", "10s", "--kill-after", "10s"], &["--ignore-sigterm", "--ignore-eof"]);
        let mut h = Harness::start("stubborn", cfg);
        h.initialize().await;
        let (pid, _) = h.ready_server().await;
        h.send(&json!({"jsonrpc": "2.0", "id": "s", "method": "slow", "params": {"ms": 10000}}));
        h.wait_status("the slow request in flight", |s| s.in_flight == 1).await;
        h.call(Command::Terminate { signal: "SIGTERM" }).await;
        let start = Instant::now();
        h.call(Command::Terminate { signal: "SIGTERM" }).await;
        let e = h.response(&json!("s")).await;
        assert_eq!(e["error"]["data"]["reason"], json!("shutting_down"), "{e}");
        assert_eq!(h.finish().await, Outcome::Stopped);
        assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
        assert!(support::group_members(pid as i32).is_empty(), "the server's group survived");
    })
}

#[test]
fn two_instances_in_one_process_never_touch_each_others_processes() {
    run(async {
        let mut a = Harness::start("a", config(&["--backoff-initial", "10ms"], &[]));
        let mut b = Harness::start("b", config(&[], &[]));
        a.initialize().await;
        b.initialize().await;
        let daemon = |r: serde_json::Value| r["result"]["pid"].as_i64().expect("a daemon pid") as i32;
        let daemon_a = daemon(a.request(1, "daemon", json!({})).await);
        let daemon_b = daemon(b.request(1, "daemon", json!({})).await);
        // Double-forked: orphaned at once, re-parented to this process (the subreaper), out of
        // its server's group and session, while the servers keep running.
        let me = std::process::id() as i32;
        for pid in [daemon_a, daemon_b] {
            wait_for("the daemon orphaned to this process", || {
                procfs::process(pid).filter(|p| p.ppid == me && p.session == pid).map(|_| ())
            })
            .await;
        }

        // A's server crashes: its generation ends, and what it left behind goes with it.
        let e = a.request(2, "crash", json!({"code": 1})).await;
        assert_eq!(e["error"]["data"]["reason"], json!("server_crashed"), "{e}");
        a.wait_status("A's second generation", |s| s.is_ready() && s.child.as_ref().is_some_and(|c| c.generation == 2))
            .await;
        wait_for("A's daemon killed", || (!process_alive(daemon_a)).then_some(())).await;
        assert!(process_alive(daemon_b), "A's generation ending killed B's daemon");

        // A requested restart ends A's generation too: B's daemon still lives.
        a.call(Command::Restart { why: "test", clear_failed: false }).await;
        a.wait_status("A's third generation", |s| s.is_ready() && s.child.as_ref().is_some_and(|c| c.generation == 3))
            .await;
        assert!(process_alive(daemon_b), "A's restart killed B's daemon");
        assert_eq!(a.close().await, Outcome::Stopped);
        assert!(process_alive(daemon_b), "A's end killed B's daemon");

        // B's end takes B's daemon with it.
        assert_eq!(b.close().await, Outcome::Stopped);
        wait_for("B's daemon killed", || (!process_alive(daemon_b)).then_some(())).await;
    })
}
