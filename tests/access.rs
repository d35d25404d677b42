//! Who may reach a daemon's sockets, with real users: a daemon run as one uid with
//! `--socket-group`, a client in that group and one outside it. Switching users needs root and
//! `setpriv` (util-linux); without them the test says so and passes (CI runs as root).

mod support;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::{chown, Gid, Uid};
use serde_json::{json, Value};
use support::*;

/// Ids that no account on a test machine is expected to have.
const DAEMON: u32 = 4242;
const GROUP: u32 = 4343;
const MEMBER: u32 = 4244;
const STRANGER: u32 = 4245;

fn can_switch_users() -> bool {
    Uid::current().is_root() && Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `setpriv` running `program` as `uid` (primary group the same number) with `groups`.
fn as_user(uid: u32, groups: &[u32], program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}")).arg(format!("--regid={uid}"));
    match groups {
        [] => cmd.arg("--clear-groups"),
        _ => cmd.arg(format!("--groups={}", groups.iter().map(u32::to_string).collect::<Vec<_>>().join(","))),
    };
    cmd.arg("--").arg(program);
    cmd
}

/// A copy of `bin` in `dir` that any user may run (the build directory may be private).
fn public_copy(bin: &Path, dir: &Path) -> PathBuf {
    let to = dir.join(bin.file_name().expect("file name"));
    std::fs::copy(bin, &to).expect("copy the binary");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

fn connect_as(uid: u32, groups: &[u32], visor: &Path, run: &Path) -> Output {
    let mut child = as_user(uid, groups, visor)
        .args(["connect", "test-server"])
        .env("MCPVISOR_RUNTIME_DIR", run)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn connect");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{init}").expect("write");
    drop(stdin);
    child.wait_with_output().expect("wait for connect")
}

/// The daemon, stopped however the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn first_line(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap_or(Value::Null)
}

#[test]
fn a_socket_group_admits_its_members_and_no_one_else() {
    if !can_switch_users() {
        eprintln!("skipped: switching users needs root and setpriv");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let visor = public_copy(&mcpvisor_bin(), dir.path());
    let server = public_copy(&test_server_bin(), dir.path());
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    chown(&home, Some(Uid::from_raw(DAEMON)), Some(Gid::from_raw(DAEMON))).expect("chown");
    let (run, log) = (home.join("run"), home.join("serve.log"));

    let mut daemon = Running(
        as_user(DAEMON, &[GROUP], &visor)
            .args(["serve", "--socket-group", &GROUP.to_string(), "--share", "shared", "--runtime-dir"])
            .arg(&run)
            .arg("--state-dir")
            .arg(home.join("state"))
            .arg("--log-file")
            .arg(&log)
            .arg("--")
            .arg(&server)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the daemon"),
    );
    let endpoint = run.join("test-server.mcp");
    wait_for("the daemon's endpoint", TIMEOUT, || endpoint.exists().then_some(()));

    let meta = |p: &Path| std::fs::metadata(p).expect("metadata");
    assert_eq!((meta(&run).mode() & 0o777, meta(&run).gid()), (0o750, GROUP), "the socket directory");
    for socket in [endpoint.clone(), run.join("test-server.sock")] {
        assert_eq!((meta(&socket).mode() & 0o777, meta(&socket).gid()), (0o660, GROUP), "{}", socket.display());
    }

    let member = connect_as(MEMBER, &[GROUP], &visor, &run);
    let answer = first_line(&member);
    assert_eq!(answer["result"]["serverInfo"]["name"], json!("test-server"), "{member:?}");

    let stranger = connect_as(STRANGER, &[], &visor, &run);
    let answer = first_line(&stranger);
    assert_eq!(stranger.status.code(), Some(3), "{stranger:?}");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("no mcpvisor daemon")), "{answer}");

    let status =
        as_user(STRANGER, &[], &visor).args(["status", "test-server"]).env("MCPVISOR_RUNTIME_DIR", &run).output();
    assert_ne!(status.expect("status").status.code(), Some(0), "a stranger cannot read the status");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.0.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let code = wait_exit(&mut daemon.0, TIMEOUT, &log);
    assert_eq!(code.code(), Some(0));
}
