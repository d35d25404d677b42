//! Server-sent events: a response body fed message by message. Each message is one `message`
//! event with an id unique within its session (`data:` holds the JSON line as it came from the
//! server: a line never contains a newline). A comment line keeps an idle stream open through
//! proxies every [`KEEPALIVE`]; a POST's stream ends after the response it was opened for.
//!
//! A stream of a 2025-11-25 session starts with a priming event: an id with no data, and a
//! `retry` interval, so that a client whose connection breaks before anything else comes can
//! still resume the stream with `Last-Event-ID`.
//!
//! Dropping the body (the client went away) runs its guard, which tells the session.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant, Sleep};

/// How often an idle stream gets a keep-alive comment (some proxies cut idle streams at about
/// 100 s).
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// How long a client whose stream broke waits before it resumes (the priming event's `retry`).
pub const RETRY_MS: u64 = 1000;

/// One server message for a stream, with its event id; `last` ends the stream after it. A
/// delivery with an empty line is a priming event (a server line is never empty).
#[derive(Debug)]
pub struct Delivery {
    pub id: u64,
    pub line: Bytes,
    pub last: bool,
}

impl Delivery {
    pub fn priming(id: u64) -> Delivery {
        Delivery { id, line: Bytes::new(), last: false }
    }

    pub fn is_priming(&self) -> bool {
        self.line.is_empty()
    }
}

pub struct Sse {
    /// Sent before what arrives on `rx`.
    leading: VecDeque<Delivery>,
    rx: mpsc::UnboundedReceiver<Delivery>,
    keepalive: Pin<Box<Sleep>>,
    ended: bool,
    /// Dropped with the body: tells the session that the stream is gone.
    _guard: Box<dyn Send + Sync>,
}

impl Sse {
    /// A stream starting with `leading`, then what arrives on `rx`.
    pub fn new(
        leading: impl IntoIterator<Item = Delivery>,
        rx: mpsc::UnboundedReceiver<Delivery>,
        guard: Box<dyn Send + Sync>,
    ) -> Sse {
        let leading = leading.into_iter().collect();
        Sse { leading, rx, keepalive: Box::pin(sleep(KEEPALIVE)), ended: false, _guard: guard }
    }

    fn event(&mut self, delivery: Delivery) -> Bytes {
        self.ended = delivery.last;
        self.keepalive.as_mut().reset(Instant::now() + KEEPALIVE);
        if delivery.is_priming() {
            return Bytes::from(format!("id: {}\nretry: {RETRY_MS}\ndata: \n\n", delivery.id));
        }
        let mut out = Vec::with_capacity(delivery.line.len() + 40);
        out.extend_from_slice(format!("id: {}\nevent: message\ndata: ", delivery.id).as_bytes());
        out.extend_from_slice(&delivery.line);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

impl Body for Sse {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(first) = self.leading.pop_front() {
            let chunk = self.event(first);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(delivery)) => {
                let chunk = self.event(delivery);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if self.keepalive.as_mut().poll(cx).is_ready() {
                    self.keepalive.as_mut().reset(Instant::now() + KEEPALIVE);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n")))));
                }
                Poll::Pending
            }
        }
    }
}
