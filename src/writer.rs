//! Write queues with their own task, so the supervisor never blocks on a slow reader.
//!
//! An [`Outbox`] accepts whole messages (without their newline) and never blocks. A writer task
//! drains it, coalescing small messages into one write and writing large ones straight from their
//! buffers. The bytes waiting are counted: above a high-water mark the outbox reports itself
//! congested, and the supervisor stops reading from whatever feeds it until it drains. That keeps memory bounded without ever stalling the event loop.
//!
//! Dropping the outbox lets the task write what is left and then close the writer, which is how
//! a child's stdin gets closed.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// Bytes waiting above which the outbox is congested.
const HIGH_WATER: usize = 1024 * 1024;
/// Messages smaller than this are copied into one buffer and written together.
const COALESCE: usize = 64 * 1024;

struct Shared {
    queued: AtomicUsize,
    drained: Notify,
}

pub struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    shared: Arc<Shared>,
}

impl Outbox {
    /// Starts a writer task; `on_error` is called once if a write fails (the task then ends and
    /// later messages are dropped).
    pub fn spawn<W>(writer: W, on_error: impl FnOnce(io::Error) + Send + 'static) -> (Outbox, JoinHandle<()>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { queued: AtomicUsize::new(0), drained: Notify::new() });
        let task = tokio::spawn(write_loop(writer, rx, shared.clone(), on_error));
        (Outbox { tx, shared }, task)
    }

    /// Queues one message; returns false if the writer is gone.
    pub fn send(&self, msg: Bytes) -> bool {
        let len = msg.len() + 1;
        self.shared.queued.fetch_add(len, Ordering::Relaxed);
        if self.tx.send(msg).is_err() {
            self.shared.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn congested(&self) -> bool {
        self.shared.queued.load(Ordering::Relaxed) > HIGH_WATER
    }

    /// Bytes not yet written.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Resolves once the outbox is no longer congested.
    pub async fn drained(&self) {
        while self.congested() {
            self.shared.drained.notified().await;
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
    on_error: impl FnOnce(io::Error),
) {
    let mut stage: Vec<u8> = Vec::with_capacity(COALESCE * 2);
    while let Some(first) = rx.recv().await {
        let mut written = 0;
        let mut next = Some(first);
        let result: io::Result<()> = async {
            while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                written += msg.len() + 1;
                if msg.len() >= COALESCE {
                    writer.write_all(&stage).await?;
                    stage.clear();
                    writer.write_all(&msg).await?;
                    writer.write_all(b"\n").await?;
                } else {
                    stage.extend_from_slice(&msg);
                    stage.push(b'\n');
                    if stage.len() >= COALESCE {
                        writer.write_all(&stage).await?;
                        stage.clear();
                    }
                }
            }
            writer.write_all(&stage).await?;
            stage.clear();
            writer.flush().await
        }
        .await;
        let before = shared.queued.fetch_sub(written, Ordering::Relaxed);
        if before > HIGH_WATER && before - written <= HIGH_WATER {
            shared.drained.notify_one();
        }
        if let Err(e) = result {
            on_error(e);
            return;
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn writes_messages_in_order_with_newlines_and_closes() {
        let (a, mut b) = tokio::io::duplex(1024);
        let (outbox, task) = Outbox::spawn(a, |_| {});
        for i in 0..100 {
            assert!(outbox.send(Bytes::from(format!("m{i}"))));
        }
        outbox.send(Bytes::from(vec![b'x'; 100_000]));
        drop(outbox);
        let mut out = Vec::new();
        b.read_to_end(&mut out).await.expect("read");
        task.await.expect("task");
        let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 102);
        assert_eq!(lines[0], b"m0");
        assert_eq!(lines[99], b"m99");
        assert_eq!(lines[100].len(), 100_000);
    }

    #[tokio::test]
    async fn reports_congestion_until_the_reader_catches_up() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let (outbox, _task) = Outbox::spawn(a, |_| {});
        outbox.send(Bytes::from(vec![b'x'; HIGH_WATER + 1]));
        assert!(outbox.congested());
        let reader = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while b.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {}
        });
        outbox.drained().await;
        assert!(!outbox.congested());
        drop(outbox);
        reader.await.expect("reader");
    }
}
