//! Turning a [`ChildSpec`] into a command: its own process group (so the whole tree can be
//! signalled: `npx` → `sh` → `node`, `uv run` → `python`), CLOEXEC pipes for stdin, stdout and
//! stderr, the `--env` variables, the resource limits, and without systemd's per-service
//! variables (`NOTIFY_SOCKET`, `WATCHDOG_*`, `LISTEN_*`), which belong to mcpvisor and would
//! confuse a server that understands them.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::resource::{setrlimit, Resource};

use crate::config::ChildSpec;

/// The command could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("command not found: `{program}` (check the name, install it, or give an absolute path)")]
    NotFound { program: String },
    #[error("permission denied running `{program}` (is it executable?)")]
    PermissionDenied { program: String },
    #[error("working directory `{dir}` is not usable: {source}")]
    Cwd { dir: String, source: std::io::Error },
    #[error("cannot start `{program}`: {source}")]
    Other { program: String, source: std::io::Error },
}

impl SpawnError {
    pub fn new(spec: &ChildSpec, source: std::io::Error) -> SpawnError {
        let program = spec.program.to_string_lossy().into_owned();
        if let Some(dir) = &spec.cwd {
            if !dir.is_dir() {
                return SpawnError::Cwd { dir: dir.display().to_string(), source };
            }
        }
        match source.kind() {
            std::io::ErrorKind::NotFound => SpawnError::NotFound { program },
            std::io::ErrorKind::PermissionDenied => SpawnError::PermissionDenied { program },
            _ => SpawnError::Other { program, source },
        }
    }
}

/// The command for `spec`, ready to spawn.
pub fn command(spec: &ChildSpec) -> Command {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k == "NOTIFY_SOCKET" || k.starts_with("WATCHDOG_") || k.starts_with("LISTEN_") {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(spec.env.iter().map(|var| (&var.key, &var.value)));
    let limits: Vec<(Resource, u64)> =
        [(Resource::RLIMIT_NOFILE, spec.limit_nofile), (Resource::RLIMIT_AS, spec.limit_as)]
            .into_iter()
            .filter_map(|(resource, limit)| Some((resource, limit?)))
            .collect();
    if !limits.is_empty() {
        // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
        // calls are allowed; setrlimit is a plain system call that neither allocates nor takes
        // locks (the list was built before the fork). std offers no safe way to set a limit for
        // the child only.
        unsafe {
            cmd.pre_exec(move || {
                for (resource, limit) in &limits {
                    setrlimit(*resource, *limit, *limit).map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
    }
    cmd
}
