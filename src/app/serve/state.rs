//! The daemon's state directory (`StateDirectory=` under systemd): each server's restart
//! history, in `NAME.restarts`, so that a server's rolling restart limit still holds after the
//! daemon itself restarts. A file that cannot be read or written costs only that guarantee: the
//! problem is logged and the history lives in memory.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use tokio::task::JoinHandle;

use crate::lifecycle::history::RestartHistory;

const EXTENSION: &str = "restarts";

#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Creates the directory (private to the daemon's user) if it is missing.
    pub fn open(path: &Path) -> io::Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
        Ok(StateDir { path: path.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, server: &str) -> PathBuf {
        self.path.join(format!("{server}.{EXTENSION}"))
    }

    /// Server `name`'s history as the daemon last wrote it (empty if it never did).
    pub fn load(&self, server: &str) -> RestartHistory {
        let file = self.file(server);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return RestartHistory::default(),
            Err(e) => {
                tracing::warn!(server, file = %file.display(), "cannot read the restart history; starting afresh: {e}");
                return RestartHistory::default();
            }
        };
        let (history, bad) = RestartHistory::decode(&text, Instant::now(), SystemTime::now());
        if bad > 0 {
            tracing::warn!(server, file = %file.display(), bad, "skipped lines of the restart history that are not times");
        }
        history
    }

    /// Writes `history` down now and after each change, until the task is aborted.
    pub fn keep(&self, server: &str, history: RestartHistory) -> JoinHandle<()> {
        let (file, server) = (self.file(server), server.to_owned());
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                history.changed().await;
                match write_atomically(&file, &history.encode(Instant::now(), SystemTime::now())) {
                    Ok(()) => failing = false,
                    // Logged once per run of failures, not at every restart.
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(server, file = %file.display(), "cannot keep the restart history: {e}");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

/// Replaces `file` with `text` so that a crash mid-write leaves the old or the new one.
fn write_atomically(file: &Path, text: &str) -> io::Result<()> {
    let tmp = file.with_extension(format!("{EXTENSION}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_history_written_by_one_daemon_is_read_by_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&dir.path().join("state")).expect("open");
        let history = state.load("srv");
        let keeper = state.keep("srv", history.clone());
        let now = Instant::now();
        history.record(now, Duration::from_secs(3600));
        history.record(now, Duration::from_secs(3600));
        let file = state.file("srv");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&file).map_or(0, |t| t.lines().count()) < 2 {
            assert!(Instant::now() < deadline, "the history was not written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        keeper.abort();
        let again = state.load("srv");
        assert_eq!(again.in_window(Instant::now(), Duration::from_secs(3600)), 2);
        assert_eq!(state.load("other").in_window(Instant::now(), Duration::from_secs(3600)), 0);
    }
}
