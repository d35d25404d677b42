//! A running `mcpvisor serve` in a temporary directory: its config file, socket directory and
//! log, and clients that reach its servers through `mcpvisor connect NAME`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use super::{ctl, mcpvisor_bin, pids_in_log, status_json, wait_for, Visor, TIMEOUT};

pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub runtime_dir: PathBuf,
    pub log_path: PathBuf,
    pub config_path: PathBuf,
}

impl Daemon {
    /// `mcpvisor serve --config FILE` with `config` as the file; waits until each of `servers`
    /// has its endpoint.
    pub fn start(config: &str, servers: &[&str]) -> Daemon {
        Daemon::start_with_env(config, servers, &[])
    }

    /// As [`Daemon::start`], with more environment variables.
    pub fn start_with_env(config: &str, servers: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("servers.toml");
        std::fs::write(&config_path, config).expect("write the config");
        let daemon = Daemon::spawn(dir, config_path, &["--config".into()], true, env);
        daemon.wait_endpoints(servers);
        daemon
    }

    /// As [`Daemon::start`], logging with `--log-dir` (its `logs` directory) instead of a file.
    pub fn start_with_log_dir(config: &str, servers: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("servers.toml");
        std::fs::write(&config_path, config).expect("write the config");
        let logs = dir.path().join("logs").display().to_string();
        let args = ["--log-dir".to_owned(), logs, "--config".to_owned()];
        let mut daemon = Daemon::spawn(dir, config_path, &args, true, &[]);
        daemon.log_path = daemon.dir.path().join("logs/mcpvisor.log");
        daemon.wait_endpoints(servers);
        daemon
    }

    /// `mcpvisor serve [args]` (e.g. `-- COMMAND`), not waiting for anything.
    pub fn spawn_args(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("unused.toml");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Daemon::spawn(dir, config_path, &args, false, &[])
    }

    fn spawn(
        dir: tempfile::TempDir,
        config_path: PathBuf,
        args: &[String],
        with_config: bool,
        env: &[(&str, &str)],
    ) -> Daemon {
        let runtime_dir = dir.path().join("run");
        let log_path = dir.path().join("serve.log");
        let mut cmd = Command::new(mcpvisor_bin());
        cmd.arg("serve").arg("--log-level").arg("debug");
        if !args.iter().any(|a| a == "--log-dir") {
            cmd.arg("--log-file").arg(&log_path);
        }
        cmd.args(args);
        if with_config {
            cmd.arg(&config_path);
        }
        // Restart histories stay in the test's directory unless the test says otherwise.
        cmd.env_remove("STATE_DIRECTORY").env("XDG_STATE_HOME", dir.path().join("state"));
        cmd.envs(env.iter().copied());
        cmd.env("MCPVISOR_RUNTIME_DIR", &runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn mcpvisor serve");
        Daemon { child, dir, runtime_dir, log_path, config_path }
    }

    pub fn wait_endpoints(&self, servers: &[&str]) {
        for name in servers {
            let path = self.runtime_dir.join(format!("{name}.sock"));
            wait_for(&format!("{name}'s control socket"), TIMEOUT, || {
                std::os::unix::net::UnixStream::connect(&path).is_ok().then_some(())
            });
        }
    }

    /// The address of the daemon's HTTP front (from its log: it may bind port 0).
    pub fn http_addr(&self) -> String {
        wait_for("the HTTP front", TIMEOUT, || {
            let log = self.log();
            let rest = log.split("HTTP front ready: ").nth(1)?;
            let rest = rest.trim_start_matches("https://").trim_start_matches("http://");
            rest.split("/mcp").next().map(str::to_owned)
        })
    }

    /// A client of server `name`.
    pub fn connect(&self, name: &str) -> Visor {
        Visor::connect(name, &self.runtime_dir)
    }

    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        ctl(&self.runtime_dir, args)
    }

    /// `status NAME --json`.
    pub fn status(&self, name: &str) -> Value {
        status_json(&self.runtime_dir, name).1
    }

    /// Polls `status NAME --json` until `pred` holds.
    pub fn wait_status(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for(what, TIMEOUT, || Some(self.status(name)).filter(|s| pred(s)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).expect("signal the daemon");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        super::wait_exit(&mut self.child, timeout, &self.log_path)
    }

    pub fn stderr_text(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Leave nothing behind, even when a test failed half way.
        for pid in pids_in_log(&self.log()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
