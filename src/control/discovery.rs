//! Naming running instances and finding their control sockets.
//!
//! Each `mcpvisor run` has a name (`--name`, or one derived from the server command) and a
//! control socket `NAME.sock` in a per-user directory:
//! 1. `$RUNTIME_DIRECTORY` when systemd sets it (`RuntimeDirectory=` in the unit);
//! 2. `$XDG_RUNTIME_DIR/mcpvisor`, or `/run/user/UID/mcpvisor` when that directory exists and is
//!    ours: MCP clients start servers with a minimal environment that often lacks
//!    `XDG_RUNTIME_DIR`, and the shell running `mcpvisor status` must find the same place;
//! 3. otherwise `/tmp/mcpvisor-UID`, created 0700 and refused if someone else owns it or it is a
//!    symlink.
//!
//! `MCPVISOR_RUNTIME_DIR`, when set, replaces all of these (for tests, or to pin one place).
//!
//! A socket file whose owner is gone (connecting is refused) is stale and replaced; a live one is
//! never stolen: the new instance takes the name with a `-2`, `-3`, … suffix instead.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};

use nix::unistd::Uid;

use super::access::Access;

/// Launchers whose first operand names the real server.
const LAUNCHERS: &[&str] =
    &["npx", "uvx", "uv", "pipx", "bunx", "bun", "node", "deno", "python", "python3", "sh", "bash", "env", "docker"];

/// Derives an instance name from a server command: `npx -y @modelcontextprotocol/server-everything`
/// gives `server-everything`, `uvx mcp-server-time` gives `mcp-server-time`.
pub fn default_name(program: &OsStr, args: &[std::ffi::OsString]) -> String {
    let base = |s: &str| -> String {
        let s = s.trim_end_matches('/');
        let s = s.rsplit('/').next().unwrap_or(s);
        // npm package specs: @scope/name@version
        let s = s.split('@').find(|p| !p.is_empty()).unwrap_or(s);
        s.strip_suffix(".js").or_else(|| s.strip_suffix(".py")).unwrap_or(s).to_owned()
    };
    let program = program.to_string_lossy();
    let mut name = base(&program);
    if LAUNCHERS.contains(&name.as_str()) {
        let operand = args
            .iter()
            .map(|a| a.to_string_lossy())
            .filter(|a| !a.starts_with('-') && !matches!(a.as_ref(), "run" | "exec" | "tool" | "x" | "-m"))
            .find(|a| !a.contains(' '));
        if let Some(op) = operand {
            name = base(&op);
        }
    }
    sanitize(&name)
}

/// Keeps names usable as file names and metric labels.
pub fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect();
    let s = s.trim_matches(|c| c == '-' || c == '.').to_owned();
    if s.is_empty() {
        "server".to_owned()
    } else {
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{0} is not a directory owned by this user and closed to others (mode 0700, or 0750 with a socket group); refusing to use it")]
    Unsafe(PathBuf),
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, io::Error),
}

/// The socket directory of the system-wide daemon (`RuntimeDirectory=mcpvisor` of the system
/// unit): looked in by every user's commands, never used by `run`.
pub const SYSTEM_DIR: &str = "/run/mcpvisor";

/// Where commands look for sockets: the candidate directories, then the system daemon's.
fn lookup_dirs() -> Vec<PathBuf> {
    let mut dirs = candidate_dirs();
    if std::env::var_os("MCPVISOR_RUNTIME_DIR").filter(|d| !d.is_empty()).is_none() {
        let system = PathBuf::from(SYSTEM_DIR);
        if !dirs.contains(&system) {
            dirs.push(system);
        }
    }
    dirs
}

/// Candidate socket directories, most preferred first (the first existing or creatable one is
/// used by `run`; the CLI looks in all of them).
pub fn candidate_dirs() -> Vec<PathBuf> {
    if let Some(d) = std::env::var_os("MCPVISOR_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return vec![PathBuf::from(d)];
    }
    let uid = Uid::current();
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may list several, separated by ':'.
        if let Some(first) = d.to_string_lossy().split(':').next() {
            dirs.push(PathBuf::from(first));
        }
    }
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(xdg).join("mcpvisor"));
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if owned_private_dir(&run_user) {
        dirs.push(run_user.join("mcpvisor"));
    }
    dirs.push(std::env::temp_dir().join(format!("mcpvisor-{uid}")));
    dirs.dedup();
    dirs
}

fn owned_private_dir(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(m) => m.is_dir() && m.uid() == Uid::current().as_raw() && m.mode() & 0o077 == 0,
        Err(_) => false,
    }
}

/// Makes sure `dir` exists, belongs to us, is not a symlink and is private (0700).
pub fn ensure_private_dir(dir: &Path) -> Result<(), DirError> {
    ensure_dir(dir, Access::PRIVATE)
}

/// Makes sure `dir` exists, belongs to us, is not a symlink, and is closed as `access` says.
pub fn ensure_dir(dir: &Path, access: Access) -> Result<(), DirError> {
    match fs::symlink_metadata(dir) {
        // An existing one is taken as it is, or refused: something else may have been open to
        // others meanwhile.
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| DirError::Create(dir.to_owned(), e))?;
            // The mode given to mkdir is masked by the umask.
            access.secure_dir(dir).map_err(|e| DirError::Create(dir.to_owned(), e))?;
        }
        Err(e) => return Err(DirError::Create(dir.to_owned(), e)),
    }
    if access.dir_is_safe(dir) {
        Ok(())
    } else {
        Err(DirError::Unsafe(dir.to_owned()))
    }
}

/// The directory `run` puts its socket in.
pub fn socket_dir() -> Result<PathBuf, DirError> {
    let mut last = None;
    for dir in candidate_dirs() {
        match ensure_private_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| DirError::Unsafe(PathBuf::from("/tmp"))))
}

/// Whether something answers on the socket.
pub fn is_live(path: &Path) -> bool {
    StdUnixStream::connect(path).is_ok()
}

/// Whether `path` is a socket file nobody listens on any more.
pub fn is_stale(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => !is_live(path),
        _ => false,
    }
}

/// Picks `dir/NAME.sock`, or `NAME-2.sock`, … when a live instance holds the name; removes stale
/// sockets on the way. Returns the name and the path.
pub fn claim(dir: &Path, name: &str) -> io::Result<(String, PathBuf)> {
    for n in 1..1000 {
        let candidate = if n == 1 { name.to_owned() } else { format!("{name}-{n}") };
        let path = dir.join(format!("{candidate}.sock"));
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((candidate, path)),
            Err(e) => return Err(e),
            Ok(_) if is_stale(&path) => {
                tracing::info!(path = %path.display(), "removing a stale control socket");
                fs::remove_file(&path)?;
                return Ok((candidate, path));
            }
            Ok(_) => continue, // live, or not a socket: never steal it
        }
    }
    Err(io::Error::other(format!("no free instance name like {name} in {}", dir.display())))
}

/// Sockets of instances that answer, across all candidate directories, sorted by name.
pub fn live_instances() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for dir in lookup_dirs() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension() != Some(OsStr::new("sock")) {
                continue;
            }
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
            if out.iter().any(|(n, _)| *n == name) || !is_live(&path) {
                continue;
            }
            out.push((name, path));
        }
    }
    out.sort();
    out
}

/// The client endpoints (`NAME.mcp`) of daemon servers called `name` that exist, most preferred
/// first. They are not probed: each connection to an endpoint is a client (and, for a per-client
/// server, starts a process), so the caller connects for real and moves on if it is refused.
pub fn endpoints(name: &str) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    lookup_dirs()
        .into_iter()
        .map(|d| d.join(format!("{name}.mcp")))
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .collect()
}

/// The control sockets of running `mcpvisor serve` daemons (`serve-PID.daemon`).
pub fn daemon_sockets() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in lookup_dirs() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension() == Some(OsStr::new("daemon")) && !out.contains(&path) && is_live(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The socket of the instance called `name`, if one answers.
pub fn find(name: &str) -> Option<PathBuf> {
    lookup_dirs().into_iter().map(|d| d.join(format!("{name}.sock"))).find(|p| is_live(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn name(cmd: &[&str]) -> String {
        let args: Vec<OsString> = cmd[1..].iter().map(OsString::from).collect();
        default_name(OsStr::new(cmd[0]), &args)
    }

    #[test]
    fn names_come_from_the_real_server() {
        assert_eq!(name(&["npx", "-y", "@modelcontextprotocol/server-everything"]), "server-everything");
        assert_eq!(name(&["npx", "-y", "@modelcontextprotocol/server-filesystem@1.2.3", "/tmp"]), "server-filesystem");
        assert_eq!(name(&["uvx", "mcp-server-time"]), "mcp-server-time");
        assert_eq!(name(&["uv", "run", "my_server.py"]), "my_server");
        assert_eq!(name(&["/usr/local/bin/my-server", "--port", "1"]), "my-server");
        assert_eq!(name(&["node", "/opt/x/dist/index.js"]), "index");
        assert_eq!(name(&["sh", "-c", "exec thing"]), "sh");
        assert_eq!(sanitize("a b/c"), "a-b-c");
        assert_eq!(sanitize("///"), "server");
    }

    #[test]
    fn claim_skips_live_names_and_replaces_stale_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = std::os::unix::net::UnixListener::bind(dir.path().join("srv.sock")).expect("bind");
        let (n, p) = claim(dir.path(), "srv").expect("claim");
        assert_eq!(n, "srv-2");
        assert_eq!(p, dir.path().join("srv-2.sock"));
        drop(live); // leaves a socket file nobody listens on
        assert!(is_stale(&dir.path().join("srv.sock")));
        let (n, _) = claim(dir.path(), "srv").expect("claim");
        assert_eq!(n, "srv");
        assert!(!dir.path().join("srv.sock").exists(), "the stale socket was removed");
    }

    #[test]
    fn private_dir_is_created_0700_and_a_symlink_is_refused() {
        let base = tempfile::tempdir().expect("tempdir");
        let d = base.path().join("sub");
        ensure_private_dir(&d).expect("create");
        assert_eq!(fs::metadata(&d).expect("meta").mode() & 0o777, 0o700);
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&d, &link).expect("symlink");
        assert!(matches!(ensure_private_dir(&link), Err(DirError::Unsafe(_))));
        let open = base.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        assert!(ensure_private_dir(&open).is_err());
    }
}
