//! A server's stderr: drained line by line into the log, and into a bounded tail kept for error
//! reports, `status` and `mcpvisor logs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::protocol::framing::{Frame, FramedReader};

const TAIL_LINES: usize = 100;
/// stderr lines longer than this are cut in the log.
const MAX_LINE: usize = 16 * 1024;

/// The last lines a server wrote to stderr (across its generations), and how many it wrote in all.
#[derive(Debug, Default)]
pub struct StderrTail {
    lines: VecDeque<String>,
    total: u64,
}

impl StderrTail {
    fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        self.total += 1;
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n)).cloned().collect()
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Shared between an instance and the drain task of its current server.
#[derive(Debug, Clone, Default)]
pub struct SharedTail(Arc<Mutex<StderrTail>>);

impl SharedTail {
    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        self.0.lock().map(|t| t.last(n)).unwrap_or_default()
    }

    /// Lines written in all.
    pub fn total(&self) -> u64 {
        self.0.lock().map(|t| t.total()).unwrap_or(0)
    }

    fn push(&self, line: String) {
        if let Ok(mut tail) = self.0.lock() {
            tail.push(line);
        }
    }
}

/// Logs and keeps every stderr line until the pipe ends, then fires `done`.
pub async fn drain(stderr: pipe::Receiver, generation: u64, tail: SharedTail, done: oneshot::Sender<()>) {
    let mut lines = FramedReader::new(stderr, MAX_LINE);
    while let Ok(Some(frame)) = lines.next().await {
        let line = match frame {
            Frame::Line(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Frame::Oversized { len, head } => {
                format!("{}… [{len} bytes, cut]", String::from_utf8_lossy(&head[..head.len().min(1024)]))
            }
        };
        tracing::info!(target: "mcpvisor::child", generation, "stderr: {line}");
        tail.push(line);
    }
    let _ = done.send(());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_and_counts_all() {
        let tail = SharedTail::default();
        for i in 0..150 {
            tail.push(format!("line {i}"));
        }
        assert_eq!(tail.total(), 150);
        assert_eq!(tail.last(2), vec!["line 148".to_owned(), "line 149".to_owned()]);
        assert_eq!(tail.last(1000).len(), TAIL_LINES);
    }
}
