//! Server-sent events: a response body fed message by message. Each message is one `message`
//! event with an id unique within its session (`data:` holds the JSON line as it came from the
//! server: a line never contains a newline). A comment line keeps an idle stream open through
//! proxies every [`KEEPALIVE`]; a POST's stream ends after the response it was opened for.
//!
//! Dropping the body (the client went away) runs its guard, which tells the session.

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

/// One server message for a stream, with its event id; `last` ends the stream after it.
#[derive(Debug)]
pub struct Delivery {
    pub id: u64,
    pub line: Bytes,
    pub last: bool,
}

pub struct Sse {
    first: Option<Delivery>,
    rx: mpsc::UnboundedReceiver<Delivery>,
    keepalive: Pin<Box<Sleep>>,
    ended: bool,
    /// Dropped with the body: tells the session that the stream is gone.
    _guard: Box<dyn Send + Sync>,
}

impl Sse {
    /// A stream starting with `first` (if any), then what arrives on `rx`.
    pub fn new(first: Option<Delivery>, rx: mpsc::UnboundedReceiver<Delivery>, guard: Box<dyn Send + Sync>) -> Sse {
        Sse { first, rx, keepalive: Box::pin(sleep(KEEPALIVE)), ended: false, _guard: guard }
    }

    fn event(&mut self, delivery: Delivery) -> Bytes {
        self.ended = delivery.last;
        self.keepalive.as_mut().reset(Instant::now() + KEEPALIVE);
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
        if let Some(first) = self.first.take() {
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
