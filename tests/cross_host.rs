//! Scale-out across hosts: three network namespaces joined by veth pairs play three machines,
//! two running `mcpvisor serve --http --replica mcp-N` and one running HAProxy with the shipped
//! configuration (deploy/haproxy/haproxy.cfg), and the TypeScript SDK's Streamable HTTP client
//! (tests/cross_host/driver.cjs) opens 200 sessions through the balancer, from the balancer's
//! host. Every packet stays inside those namespaces.
//!
//! Checked: the sessions spread over both replicas and each one's requests reach its replica; a
//! SIGKILL of one whole replica moves its clients to the other (404, then a new session there)
//! and leaves the other's sessions untouched; a rolling restart of a replica (SIGTERM, drain,
//! start) loses none of the requests in flight on it. The shipped nginx configuration passes
//! `nginx -t` on the balancer's host, then replaces HAProxy there: new sessions spread over both
//! replicas and each one's requests reach its replica.
//!
//! Needs root, iproute2, HAProxy (and nginx for its check) and the interop peers; `.ci/run`
//! installs them. Without them the test says why and is skipped, unless
//! `MCPVISOR_REQUIRE_NETNS=1` (as in CI), which makes it fail.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::*;

/// How long one step of the driver may take (200 sessions on a loaded 2-core machine).
const STEP: Duration = Duration::from_secs(120);
const SESSIONS: usize = 200;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args`; its stdout, or why it failed.
fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
    }
}

/// Skips (or, with `MCPVISOR_REQUIRE_NETNS`, fails) with `why`.
fn skip(why: &str) {
    assert!(std::env::var_os("MCPVISOR_REQUIRE_NETNS").is_none(), "cross-host test cannot run: {why}");
    eprintln!("skipping the cross-host test: {why}");
}

/// Three namespaces: the balancer `lb` with a veth pair to each replica host. Removed on drop,
/// with every process left in them.
struct Hosts {
    lb: String,
    replicas: [String; 2],
}

impl Hosts {
    fn create() -> Result<Hosts, String> {
        let tag = std::process::id() % 100_000;
        let hosts =
            Hosts { lb: format!("mcpv-lb-{tag}"), replicas: [format!("mcpv-r1-{tag}"), format!("mcpv-r2-{tag}")] };
        let mut hosts_file = String::from("127.0.0.1 localhost\n");
        for name in [&hosts.lb, &hosts.replicas[0], &hosts.replicas[1]] {
            sh("ip", &["netns", "add", name])?;
            sh("ip", &["-n", name, "link", "set", "lo", "up"])?;
        }
        for (i, replica) in hosts.replicas.iter().enumerate() {
            let n = i + 1;
            let (outer, inner) = (format!("mvb{n}-{tag}"), format!("mvr{n}-{tag}"));
            sh(
                "ip",
                &["link", "add", &outer, "netns", &hosts.lb, "type", "veth", "peer", "name", &inner, "netns", replica],
            )?;
            sh("ip", &["-n", &hosts.lb, "addr", "add", &format!("10.97.{n}.1/24"), "dev", &outer])?;
            sh("ip", &["-n", replica, "addr", "add", &format!("10.97.{n}.2/24"), "dev", &inner])?;
            sh("ip", &["-n", &hosts.lb, "link", "set", &outer, "up"])?;
            sh("ip", &["-n", replica, "link", "set", &inner, "up"])?;
            hosts_file.push_str(&format!("10.97.{n}.2 mcp-{n}\n"));
        }
        // `ip netns exec` shows /etc/netns/NAME/hosts as /etc/hosts: the balancer knows the
        // replicas by the names the shipped configuration uses.
        let etc = PathBuf::from("/etc/netns").join(&hosts.lb);
        std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
        std::fs::write(etc.join("hosts"), hosts_file).map_err(|e| e.to_string())?;
        Ok(hosts)
    }

    /// `program args` run on host `ns`.
    fn command(ns: &str, program: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(program).args(args);
        cmd
    }

    /// SIGKILLs every process on host `ns`.
    fn kill_all(ns: &str) {
        for pid in sh("ip", &["netns", "pids", ns]).unwrap_or_default().split_whitespace() {
            let _ = sh("kill", &["-9", pid]);
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in std::iter::once(&self.lb).chain(&self.replicas) {
            Hosts::kill_all(ns);
            let _ = sh("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.lb));
    }
}

/// One replica: `mcpvisor serve` on its host, serving the test server (handshake era, shared).
fn start_replica(hosts: &Hosts, n: usize, dir: &Path) -> Child {
    let ns = &hosts.replicas[n - 1];
    let (log, run) = (dir.join(format!("mcp-{n}.log")), dir.join(format!("run-{n}")));
    let (log, run) = (log.display().to_string(), run.display().to_string());
    let server = test_server_bin().display().to_string();
    let replica = format!("mcp-{n}");
    let args = [
        "serve",
        "--http",
        "0.0.0.0:8080",
        "--replica",
        &replica,
        "--name",
        "test-server",
        "--share",
        "shared",
        "--runtime-dir",
        &run,
        "--log-file",
        &log,
        "--",
        &server,
        "--era",
        "handshake",
    ];
    Hosts::command(ns, &mcpvisor_bin(), &args).stdin(Stdio::null()).spawn().expect("start a replica")
}

/// The TypeScript driver, on the balancer's host.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Driver {
    fn start(hosts: &Hosts, interop: &Path) -> Driver {
        let script = repo().join("tests/cross_host/driver.cjs").display().to_string();
        let (interop, url) = (interop.display().to_string(), "http://127.0.0.1:8080/mcp".to_owned());
        let node = PathBuf::from(sh("sh", &["-c", "command -v node"]).expect("node").trim());
        let mut child = Hosts::command(&hosts.lb, &node, &[&script, &interop, &url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the driver");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Driver { child, stdin, lines }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("write to the driver");
    }

    fn answer(&mut self, what: &str) -> Value {
        let line = self.lines.recv_timeout(STEP).unwrap_or_else(|_| panic!("the driver did not answer {what}"));
        let value: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON from the driver: {line}"));
        assert!(value.get("fatal").is_none(), "the driver failed: {value}");
        value
    }

    fn ask(&mut self, command: &str) -> Value {
        self.send(command);
        self.answer(command)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "close");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count(v: &Value, replica: &str) -> u64 {
    v[replica].as_u64().unwrap_or(0)
}

#[test]
fn two_replicas_behind_haproxy_survive_a_kill_and_a_rolling_restart() {
    if !nix::unistd::geteuid().is_root() {
        return skip("network namespaces need root");
    }
    for tool in ["ip", "haproxy", "nginx", "node"] {
        if sh("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            return skip(&format!("`{tool}` is not installed (.ci/run installs it)"));
        }
    }
    let interop = repo().join("target/interop");
    if !interop.join(".installed").exists() {
        return skip("the interop peers are not installed (scripts/setup-interop)");
    }
    let hosts = match Hosts::create() {
        Ok(hosts) => hosts,
        Err(e) => return skip(&format!("cannot make network namespaces: {e}")),
    };
    let dir = tempfile::tempdir().expect("tempdir");

    // The shipped nginx configuration passes `nginx -t` where the replicas' names resolve.
    let nginx_conf = dir.path().join("nginx.conf");
    let include = repo().join("deploy/nginx/mcpvisor.conf").display().to_string();
    let prefix = dir.path().display().to_string();
    std::fs::write(
        &nginx_conf,
        format!("pid {prefix}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{ include {include}; }}\n"),
    )
    .expect("nginx.conf");
    let tested =
        Hosts::command(&hosts.lb, Path::new("nginx"), &["-t", "-p", &prefix, "-c", &nginx_conf.display().to_string()])
            .output()
            .expect("nginx -t");
    assert!(tested.status.success(), "nginx -t: {}", String::from_utf8_lossy(&tested.stderr));

    let haproxy_cfg = repo().join("deploy/haproxy/haproxy.cfg").display().to_string();
    let checked =
        Hosts::command(&hosts.lb, Path::new("haproxy"), &["-c", "-f", &haproxy_cfg]).output().expect("haproxy -c");
    assert!(checked.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&checked.stderr));

    let mut replicas = [start_replica(&hosts, 1, dir.path()), start_replica(&hosts, 2, dir.path())];
    let mut haproxy = Hosts::command(&hosts.lb, Path::new("haproxy"), &["-db", "-f", &haproxy_cfg])
        .stdin(Stdio::null())
        .spawn()
        .expect("start haproxy");
    let mut driver = Driver::start(&hosts, &interop);

    // 200 sessions, spread over both replicas by the balancer.
    let opened = driver.ask(&format!("open {SESSIONS}"));
    let spread = &opened["by_replica"];
    let (on_1, on_2) = (count(spread, "mcp-1"), count(spread, "mcp-2"));
    assert_eq!(on_1 + on_2, SESSIONS as u64, "{opened}");
    assert!(on_1 > 0 && on_2 > 0, "both replicas hold sessions: {opened}");
    let first = driver.ask("call");
    assert_eq!(
        (first["ok"].as_u64(), first["kept"].as_u64()),
        (Some(SESSIONS as u64), Some(SESSIONS as u64)),
        "{first}"
    );

    // SIGKILL of one whole replica: its clients start again on the other, the other's go on.
    Hosts::kill_all(&hosts.replicas[0]);
    let _ = replicas[0].wait();
    let after_kill = driver.ask("call");
    assert_eq!(after_kill["failed"], 0, "{after_kill}");
    assert_eq!(count(&after_kill["moved"], "mcp-1"), on_1, "every session of mcp-1 moved: {after_kill}");
    assert_eq!(count(&after_kill["moved"], "mcp-2"), 0, "no session of mcp-2 moved: {after_kill}");
    assert_eq!(after_kill["kept"].as_u64(), Some(on_2), "{after_kill}");
    assert_eq!(count(&after_kill["by_replica"], "mcp-2"), SESSIONS as u64, "{after_kill}");

    // A rolling restart of mcp-2, which now holds every session: mcp-1 comes back, then mcp-2
    // gets SIGTERM with a request in flight on each session; all of them finish.
    replicas[0] = start_replica(&hosts, 1, dir.path());
    driver.send("slow 1500");
    assert_eq!(driver.answer("slow sent")["sent"].as_u64(), Some(SESSIONS as u64));
    let run_2 = dir.path().join("run-2");
    wait_for("every slow request in flight at mcp-2", STEP, || {
        let (_, status) = status_json(&run_2, "test-server");
        (status["in_flight"].as_u64() == Some(SESSIONS as u64)).then_some(())
    });
    // `ip netns exec` execs the daemon: the child's pid is mcpvisor's.
    let daemon = nix::unistd::Pid::from_raw(replicas[1].id() as i32);
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM mcp-2");
    let slow = driver.answer("slow done");
    assert_eq!((slow["ok"].as_u64(), slow["failed"].as_u64()), (Some(SESSIONS as u64), Some(0)), "{slow}");
    let status = replicas[1].wait().expect("mcp-2 exits");
    assert!(status.success(), "mcp-2 drained and exited cleanly: {status}");
    replicas[1] = start_replica(&hosts, 2, dir.path());
    let after_restart = driver.ask("call");
    assert_eq!(
        (after_restart["ok"].as_u64(), after_restart["failed"].as_u64()),
        (Some(SESSIONS as u64), Some(0)),
        "{after_restart}"
    );
    drop(driver);

    // The shipped nginx configuration routes sessions the same way.
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let conf = nginx_conf.display().to_string();
    let mut nginx = Hosts::command(&hosts.lb, Path::new("nginx"), &["-p", &prefix, "-c", &conf])
        .stdin(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut driver = Driver::start(&hosts, &interop);
    let opened = driver.ask("open 40");
    let (on_1, on_2) = (count(&opened["by_replica"], "mcp-1"), count(&opened["by_replica"], "mcp-2"));
    assert!(on_1 > 0 && on_2 > 0 && on_1 + on_2 == 40, "nginx spreads new sessions: {opened}");
    let through_nginx = driver.ask("call");
    assert_eq!((through_nginx["ok"].as_u64(), through_nginx["kept"].as_u64()), (Some(40), Some(40)), "{through_nginx}");
    drop(driver);
    for process in replicas.iter_mut().chain([&mut nginx]) {
        let _ = process.kill();
        let _ = process.wait();
    }
}
