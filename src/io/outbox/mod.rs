//! Write queues, so an instance never blocks on a slow reader.
//!
//! An [`Outbox`] accepts whole messages (without their newline) and never blocks. It is drained
//! either by a writer task ([`Outbox::spawn`], for a pipe or socket: the server's stdin, the
//! client's stdout) or, message by message, by an [`Inbox`] ([`Outbox::channel`], for a client
//! that is not a byte stream: an in-process client, an HTTP session). For a writer task, small
//! messages are copied together with their newlines as they are sent, under an uncontended lock
//! (both sides run on the same thread), and large ones are queued to be written straight from
//! their buffers: the task handles a burst as one chunk, not message by message. It is woken
//! only when the queue goes from empty to non-empty, so a burst costs one wake-up and, usually,
//! one write.
//! A burst of lines handled in one round of the event loop is held in the outbox itself
//! ([`Outbox::hold`]): appended to the queue's lines taken out of it, without the lock or the
//! byte count per message, and handed back when the round ends.
//!
//! The bytes not yet written are counted as they are written: above a high-water mark, or while a
//! large message is waiting, the outbox reports itself congested, and the supervisor stops reading
//! from whatever feeds it until it drains. That keeps memory bounded (one large message per
//! direction) without ever stalling the event loop.
//!
//! Dropping the outbox lets the task write what is left and then close the writer, which is how
//! a child's stdin gets closed. A failed write (or a dropped [`Inbox`]) is reported once through
//! [`Outbox::failed`], which is how an instance learns that its client is gone.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Bytes waiting above which the outbox is congested, and the supervisor stops reading whatever
/// feeds it: one coalesced write's worth, so small messages still go out in full-sized writes.
/// A large message (at least [`COALESCE`] bytes) congests the outbox by itself until it is written,
/// so mcpvisor holds one large message per direction and the next one waits in the kernel's pipe
/// buffer, not in mcpvisor's memory.
const HIGH_WATER: usize = 64 * 1024;
/// Messages smaller than this are copied into one buffer and written together.
const COALESCE: usize = 64 * 1024;

/// Something waiting to be written.
enum Chunk {
    /// Small messages, each followed by its newline, copied together as they were sent (a byte
    /// stream's outbox only).
    Lines(Vec<u8>),
    /// One message, without its newline: a byte stream's large ones, and every message of an
    /// inbox's outbox.
    Whole(Bytes),
}

#[derive(Default)]
struct Queue {
    /// What is waiting, in order, before `lines`.
    chunks: VecDeque<Chunk>,
    /// Small messages sent since the last chunk, each followed by its newline (a byte stream's
    /// outbox only): the last thing to write. A message is appended here directly.
    lines: Vec<u8>,
    /// Set when the [`Outbox`] is dropped: write what is left, then close.
    closed: bool,
    /// Set when a write failed (or the inbox was dropped): later messages are refused.
    failed: Option<(io::ErrorKind, String)>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.lines.is_empty()
    }

    /// Copies a small message and its newline after the others. (Their size stays bounded: past
    /// [`HIGH_WATER`] the supervisor stops reading what feeds the outbox.)
    fn append_line(&mut self, msg: &[u8]) {
        self.lines.extend_from_slice(msg);
        self.lines.push(b'\n');
    }

    /// Queues a message to be written as it is, after the lines before it.
    fn push_whole(&mut self, msg: Bytes) {
        if !self.lines.is_empty() {
            let lines = std::mem::take(&mut self.lines);
            self.chunks.push_back(Chunk::Lines(lines));
        }
        self.chunks.push_back(Chunk::Whole(msg));
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// Whether a writer task drains this outbox (small messages are then copied together).
    stream: bool,
    /// Bytes queued and not yet written, newlines included.
    queued: AtomicUsize,
    /// Large messages queued and not yet completely written.
    large: AtomicUsize,
    /// Wakes the writer task when messages arrive or the outbox is dropped.
    work: Notify,
    /// Wakes the supervisor when the outbox stops being congested.
    drained: Notify,
    /// Wakes whoever waits in [`Outbox::failed`].
    failure: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (every change is a
        // single push, swap or flag), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn congested(&self) -> bool {
        self.congested_with(0)
    }

    /// Whether the outbox is congested with `held` more bytes waiting (see [`Outbox::hold`]).
    fn congested_with(&self, held: usize) -> bool {
        self.queued.load(Ordering::Relaxed) + held > HIGH_WATER || self.large.load(Ordering::Relaxed) > 0
    }

    /// Counts `n` bytes as written, waking the supervisor if that ends congestion.
    fn written(&self, n: usize) {
        let was = self.congested();
        self.queued.fetch_sub(n, Ordering::Relaxed);
        if was && !self.congested() {
            self.drained.notify_one();
        }
    }

    /// Refuses further messages and forgets those waiting, after the sink failed.
    fn fail(&self, e: &io::Error) {
        {
            let mut queue = self.lock();
            queue.failed = Some((e.kind(), e.to_string()));
            queue.chunks.clear();
            queue.lines.clear();
        }
        self.queued.store(0, Ordering::Relaxed);
        self.large.store(0, Ordering::Relaxed);
        self.drained.notify_one();
        self.failure.notify_one();
    }

    /// Counts one message as delivered as a whole (its newline included).
    fn taken(&self, msg: &Bytes) {
        self.written(msg.len() + 1);
        if msg.len() >= COALESCE {
            self.large_written();
        }
    }

    /// Counts a large message as completely written.
    fn large_written(&self) {
        let was = self.congested();
        self.large.fetch_sub(1, Ordering::Relaxed);
        if was && !self.congested() {
            self.drained.notify_one();
        }
    }
}

pub struct Outbox {
    shared: Arc<Shared>,
    held: Held,
}

/// The small messages an [`Outbox`] holds (see [`Outbox::hold`]): a burst of lines handled in one
/// round is appended here without taking the lock or counting each message, and handed over at
/// once.
#[derive(Default)]
struct Held {
    /// Whether small messages are held rather than queued.
    on: bool,
    /// The queue's lines, taken out of it at the first message held, and the messages held since,
    /// each followed by its newline: appended to as they would have been in the queue, with no
    /// copy either way. Empty unless `taken`.
    lines: Vec<u8>,
    /// Whether `lines` are out of the queue: they go back before anything else is queued.
    taken: bool,
    /// How many bytes of `lines` the queue had counted when they were taken.
    counted: usize,
}

impl Held {
    /// Bytes held and not yet counted as queued.
    fn uncounted(&self) -> usize {
        self.lines.len() - self.counted
    }

    fn append(&mut self, msg: &[u8]) {
        self.lines.extend_from_slice(msg);
        self.lines.push(b'\n');
    }

    /// Takes the queue's lines, to append to them.
    fn take(&mut self, queue: &mut Queue) {
        std::mem::swap(&mut self.lines, &mut queue.lines);
        self.counted = self.lines.len();
        self.taken = true;
    }

    /// Puts the lines back at the end of the queue (without a copy while the queue has no lines
    /// of its own, as it cannot on the thread its writer task runs on), counting them as queued.
    fn put_back(&mut self, shared: &Shared, queue: &mut Queue) {
        if !self.taken {
            return;
        }
        shared.queued.fetch_add(self.uncounted(), Ordering::Relaxed);
        if queue.lines.is_empty() {
            std::mem::swap(&mut queue.lines, &mut self.lines);
        } else {
            queue.lines.extend_from_slice(&self.lines);
        }
        self.lines.clear();
        self.taken = false;
        self.counted = 0;
    }
}

/// A message to send: its bytes, read where they are copied, and a shared `Bytes` of them, made
/// only where the message is queued whole (so a borrowed line costs nothing to lend).
pub trait Outgoing {
    fn bytes(&self) -> &[u8];

    fn into_shared(self) -> Bytes;
}

impl Outgoing for Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn into_shared(self) -> Bytes {
        self
    }
}

impl Outgoing for &Bytes {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn into_shared(self) -> Bytes {
        self.clone()
    }
}

impl Outbox {
    fn new(stream: bool) -> Outbox {
        Outbox {
            held: Held::default(),
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                stream,
                queued: AtomicUsize::new(0),
                large: AtomicUsize::new(0),
                work: Notify::new(),
                drained: Notify::new(),
                failure: Notify::new(),
            }),
        }
    }

    /// An outbox drained by a writer task. The task ends when the outbox is dropped and everything
    /// is written (then the writer is shut down), or when a write fails (see [`Outbox::failed`]).
    pub fn spawn<W>(writer: W) -> (Outbox, JoinHandle<()>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let outbox = Outbox::new(true);
        let task = tokio::spawn(write_loop(writer, outbox.shared.clone()));
        (outbox, task)
    }

    /// An outbox drained message by message through the returned [`Inbox`].
    pub fn channel() -> (Outbox, Inbox) {
        let outbox = Outbox::new(false);
        let inbox = Inbox { shared: outbox.shared.clone() };
        (outbox, inbox)
    }

    /// Queues one message; returns false if the writer is gone. A small message for a writer task
    /// is copied from its bytes; only a message queued whole is made a shared `Bytes`, so a line
    /// lent from a read buffer never gets a reference count of its own on its way through.
    #[inline(always)]
    pub fn send(&mut self, msg: impl Outgoing) -> bool {
        // The common case of a burst, inline in the caller.
        if self.held.taken && self.held.on && msg.bytes().len() < COALESCE {
            self.held.append(msg.bytes());
            return true;
        }
        self.send_queued(msg)
    }

    /// The rest of [`Outbox::send`]: the first message of a burst held, a large one, or any
    /// message while nothing is held.
    #[inline(never)]
    fn send_queued(&mut self, msg: impl Outgoing) -> bool {
        let len = msg.bytes().len();
        if self.held.on && len < COALESCE && self.take_lines() {
            self.held.append(msg.bytes());
            return true;
        }
        let mut queue = self.shared.lock();
        if queue.failed.is_some() {
            return false;
        }
        self.shared.queued.fetch_add(len + 1, Ordering::Relaxed);
        let was_empty = queue.is_empty();
        // What was held goes first, in order.
        self.held.put_back(&self.shared, &mut queue);
        if self.shared.stream && len < COALESCE {
            queue.append_line(msg.bytes());
        } else {
            if len >= COALESCE {
                self.shared.large.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_whole(msg.into_shared());
        }
        if was_empty {
            self.shared.work.notify_one();
        }
        true
    }

    /// Keeps the small messages sent from now on in the outbox itself until [`Outbox::release`]
    /// (a writer task's outbox only; an inbox's takes messages whole). For a burst of lines
    /// handled in one round of the event loop, on the thread the writer task also runs on: the
    /// writer could not have taken them before the round ends anyway. Whoever holds must release
    /// before waiting for anything.
    pub fn hold(&mut self) {
        self.held.on = self.shared.stream;
    }

    /// Hands what was held to the writer task, and sends the next messages straight to it again.
    pub fn release(&mut self) {
        self.held.on = false;
        if !self.held.taken {
            return;
        }
        let mut queue = self.shared.lock();
        if queue.failed.is_some() {
            self.held = Held::default();
            return;
        }
        let was_empty = queue.is_empty();
        self.held.put_back(&self.shared, &mut queue);
        if was_empty {
            self.shared.work.notify_one();
        }
    }

    /// Takes the queue's lines to append the held messages to; false if the writer is gone.
    fn take_lines(&mut self) -> bool {
        let mut queue = self.shared.lock();
        if queue.failed.is_some() {
            return false;
        }
        self.held.take(&mut queue);
        true
    }

    /// Whether too much waits to be written (held messages included): whoever feeds the outbox
    /// should stop reading until it drains.
    pub fn congested(&self) -> bool {
        self.shared.congested_with(self.held.uncounted())
    }

    /// Bytes not yet written.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed) + self.held.uncounted()
    }

    /// Resolves once the outbox is no longer congested.
    pub async fn drained(&self) {
        while self.congested() {
            self.shared.drained.notified().await;
        }
    }

    /// Resolves with the error once writing has failed (for an [`Inbox`]: once it was dropped).
    /// Cancel-safe, for one waiter.
    pub async fn failed(&self) -> io::Error {
        loop {
            if let Some((kind, msg)) = self.shared.lock().failed.clone() {
                return io::Error::new(kind, msg);
            }
            self.shared.failure.notified().await;
        }
    }
}

/// The receiving end of [`Outbox::channel`]: whole messages, in order, without newlines.
pub struct Inbox {
    shared: Arc<Shared>,
}

impl Inbox {
    /// The next message; `None` once the outbox is dropped and everything was taken.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            let next = {
                let mut queue = self.shared.lock();
                queue.chunks.pop_front().ok_or(queue.closed)
            };
            match next {
                // Unreachable: an inbox's outbox never copies messages together.
                Ok(Chunk::Lines(lines)) => {
                    tracing::error!(bytes = lines.len(), "an inbox's queue held copied lines; they were dropped")
                }
                Ok(Chunk::Whole(msg)) => {
                    self.shared.taken(&msg);
                    return Some(msg);
                }
                Err(true) => return None,
                Err(false) => self.shared.work.notified().await,
            }
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.shared.fail(&io::Error::new(io::ErrorKind::BrokenPipe, "the client's inbox was dropped"));
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.release();
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, shared: Arc<Shared>) {
    let mut batch: VecDeque<Chunk> = VecDeque::new();
    // A written lines buffer, cleared, given back to the queue for the next lines.
    let mut spare: Vec<u8> = Vec::new();
    loop {
        let closed = {
            let mut queue = shared.lock();
            std::mem::swap(&mut batch, &mut queue.chunks);
            if !queue.lines.is_empty() {
                let lines = std::mem::replace(&mut queue.lines, std::mem::take(&mut spare));
                batch.push_back(Chunk::Lines(lines));
            }
            queue.closed
        };
        if batch.is_empty() {
            if closed {
                break;
            }
            shared.work.notified().await;
            continue;
        }
        if let Err(e) = write_batch(&mut writer, &shared, &mut batch, &mut spare).await {
            tracing::debug!("an outbox's writer failed: {e}");
            batch.clear();
            shared.fail(&e);
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Writes every chunk in `batch` (emptying it); a written `Lines` buffer of a usual size is kept
/// in `spare` for reuse.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    shared: &Shared,
    batch: &mut VecDeque<Chunk>,
    spare: &mut Vec<u8>,
) -> io::Result<()> {
    while let Some(chunk) = batch.pop_front() {
        match chunk {
            Chunk::Lines(mut lines) => {
                writer.write_all(&lines).await?;
                shared.written(lines.len());
                lines.clear();
                if lines.capacity() <= 2 * COALESCE {
                    *spare = lines;
                }
            }
            Chunk::Whole(msg) => {
                // Large messages go out from their own buffer, without a copy.
                let mut rest = &msg[..];
                while !rest.is_empty() {
                    let n = writer.write(rest).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    rest = &rest[n..];
                    shared.written(n);
                }
                writer.write_all(b"\n").await?;
                shared.written(1);
                if msg.len() >= COALESCE {
                    shared.large_written();
                }
            }
        }
    }
    writer.flush().await
}

#[cfg(test)]
mod tests;
