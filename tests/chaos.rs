//! Chaos soak: thousands of mixed requests through mcpvisor while the server is killed, crashes,
//! exits and hangs at random. Every request must get exactly one answer with its own id; requests
//! that are safe to repeat must succeed; mcpvisor must not leak descriptors or memory, and no
//! process of any server generation may outlive it.
//!
//! `MCPVISOR_CHAOS_REQUESTS` (default 10 000, about a minute) sets the length, for longer soaks;
//! `MCPVISOR_CHAOS_SEED` replays a run (the seed is printed). The figures of the run are printed
//! too: `cargo test --test chaos -- --nocapture`.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use support::*;

/// Requests outstanding at once.
const WINDOW: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Small,
    Safe,
    Large,
    Slow,
    AskClient,
    Chaos,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn proc_count(pid: i32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}")).map(|d| d.count()).unwrap_or(0)
}

/// Anonymous resident memory (heap, stacks), where a leak would show. Total RSS also counts the
/// binary's code, which mcpvisor drops after start-up and faults back in as the run exercises
/// crash handling, restarts and errors.
fn rss_kib(pid: i32) -> u64 {
    mcpvisor::process::procfs::status_kib(pid, "RssAnon").unwrap_or(0)
}

#[test]
fn chaos_soak_loses_nothing_and_leaks_nothing() {
    let total = env_number("MCPVISOR_CHAOS_REQUESTS", 10_000) as usize;
    let seed = env_number("MCPVISOR_CHAOS_SEED", fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("chaos: {total} requests, seed {seed}");

    let mut v = Visor::test_server(Vec::<String>::new())
        .args(["--backoff-initial", "0", "--max-restarts", "1000000", "--restart-window", "1s"])
        .args(["--ping-interval", "300ms", "--ping-timeout", "300ms", "--ping-failures", "1"])
        .spawn();
    v.initialize();
    let visor_pid = v.pid();
    let large = "L".repeat(64 * 1024);
    // Warm-up, then the figures to compare with at the end, both taken with the server up and
    // nothing in flight.
    for i in 0..200 {
        assert!(v.request(format!("warm-{i}"), "echo", json!({"data": &large[..i * 100]}))["result"].is_object());
    }
    let warm = (proc_count(visor_pid, "fd"), proc_count(visor_pid, "task"), rss_kib(visor_pid));

    let mut outstanding: HashMap<i64, Kind> = HashMap::new();
    let mut answered: HashSet<i64> = HashSet::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut server_pid: Option<i32> = None;
    let mut next = 0i64;
    let started = Instant::now();

    while (next as usize) < total || !outstanding.is_empty() {
        if (next as usize) < total && outstanding.len() < WINDOW {
            let id = next;
            next += 1;
            let roll = rng.u32(0..1000);
            let (kind, method, params) = match roll {
                0..=2 => (Kind::Chaos, "crash", json!({"signal": "KILL"})),
                3..=4 => (Kind::Chaos, "crash", json!({"signal": "SEGV"})),
                5..=6 => (Kind::Chaos, "crash", json!({"code": rng.i32(1..100)})),
                7 => (Kind::Chaos, "hang", json!({})),
                8..=10 => {
                    // From outside, as an operator or the OOM killer would.
                    if let Some(pid) = server_pid.take() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        *counts.entry("external kills").or_default() += 1;
                    }
                    (Kind::Small, "echo", json!({"n": id}))
                }
                11..=60 => (Kind::Large, "echo", json!({"data": large})),
                61..=110 => (Kind::Slow, "slow", json!({"ms": rng.u64(1..30)})),
                111..=160 => (Kind::AskClient, "ask_client", json!({"method": "roots/list"})),
                161..=400 => (Kind::Safe, "tools/list", json!({})),
                _ => (Kind::Small, "echo", json!({"n": id})),
            };
            if rng.u32(0..10) == 0 {
                v.notify("notifications/progress", json!({"progressToken": id, "progress": 1}));
            }
            v.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
            outstanding.insert(id, kind);
            continue;
        }
        let Some(msg) = v.recv_timeout(Duration::from_secs(30)) else {
            panic!("no answer within 30s; outstanding: {:?}\nlog:\n{}", outstanding, v.log());
        };
        if msg.get("method").is_some() {
            if let Some(id) = msg.get("id") {
                // A request from the server: answer it, as a client must.
                v.send(&json!({"jsonrpc": "2.0", "id": id, "result": {"roots": []}}));
            }
            continue;
        }
        let id = msg["id"].as_i64().unwrap_or_else(|| panic!("answer without a numeric id: {msg}"));
        assert!(answered.insert(id), "request {id} answered twice: {msg}");
        let kind = outstanding.remove(&id).unwrap_or_else(|| panic!("answer for unknown request {id}: {msg}"));
        if let Some(pid) = msg["result"]["pid"].as_i64() {
            server_pid = Some(pid as i32);
        }
        match (&msg["result"], &msg["error"]) {
            (r, Value::Null) if !r.is_null() => *counts.entry("results").or_default() += 1,
            (Value::Null, e) if !e.is_null() => {
                *counts.entry("errors").or_default() += 1;
                assert_ne!(kind, Kind::Safe, "a safe-to-repeat request failed instead of being re-sent: {msg}");
                if kind != Kind::Chaos && kind != Kind::AskClient {
                    assert_eq!(e["code"], json!(-32603), "{msg}");
                    assert_eq!(e["data"]["source"], json!("mcpvisor"), "{msg}");
                    assert_eq!(e["data"]["reason"], json!("server_crashed"), "{msg}");
                }
            }
            _ => panic!("neither a result nor an error: {msg}"),
        }
    }
    assert_eq!(answered.len(), total, "lost requests");

    // Let the last restart settle, then compare with the warm-up figures.
    assert!(v.request("final", "echo", json!({}))["result"].is_object());
    let (fds, tasks, rss) = warm;
    let end = (proc_count(visor_pid, "fd"), proc_count(visor_pid, "task"), rss_kib(visor_pid));
    let generations = v.server_pids();
    let children: Vec<_> = mcpvisor::process::procfs::processes().into_iter().filter(|p| p.ppid == visor_pid).collect();
    assert!(children.iter().all(|p| !p.is_zombie()), "unreaped children of mcpvisor: {children:?}");
    v.close_stdin();
    assert_eq!(v.wait_exit(TIMEOUT).code(), Some(0));

    println!(
        "chaos: {total} requests in {:.1}s, {} server generations, {counts:?}; fds {fds} -> {}, threads {tasks} -> {}, rss {rss} -> {} KiB",
        started.elapsed().as_secs_f64(),
        generations.len(),
        end.0,
        end.1,
        end.2
    );
    assert!(generations.len() > 10, "too few restarts for a chaos run: {}", generations.len());
    assert_eq!(end.0, fds, "descriptors leaked");
    assert_eq!(end.1, tasks, "threads leaked");
    assert!(end.2 < rss + 2048, "memory grew from {rss} to {} KiB", end.2);
    for pid in generations {
        assert!(!process_alive(pid), "server {pid} outlived mcpvisor");
    }
}
