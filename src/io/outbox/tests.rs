use super::*;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn a_channel_hands_over_whole_messages_and_reports_a_dropped_inbox() {
    let (mut outbox, mut inbox) = Outbox::channel();
    assert!(outbox.send(Bytes::from_static(b"one")));
    assert!(outbox.send(Bytes::from(vec![b'x'; COALESCE])));
    assert!(outbox.congested(), "a large message congests until it is taken");
    assert_eq!(inbox.recv().await.as_deref(), Some(&b"one"[..]));
    assert_eq!(inbox.recv().await.map(|m| m.len()), Some(COALESCE));
    assert!(!outbox.congested());
    assert_eq!(outbox.queued(), 0);
    drop(inbox);
    assert_eq!(outbox.failed().await.kind(), io::ErrorKind::BrokenPipe);
    assert!(!outbox.send(Bytes::from_static(b"lost")), "a dropped inbox refuses messages");
    let (mut outbox, mut inbox) = Outbox::channel();
    outbox.send(Bytes::from_static(b"last"));
    drop(outbox);
    assert_eq!(inbox.recv().await.as_deref(), Some(&b"last"[..]));
    assert_eq!(inbox.recv().await, None);
}

#[tokio::test]
async fn a_failed_write_is_reported_once_and_later_messages_refused_held_or_not() {
    let (a, b) = tokio::io::duplex(16);
    drop(b);
    let (mut outbox, task) = Outbox::spawn(a);
    outbox.send(Bytes::from_static(b"nobody reads this"));
    assert_eq!(outbox.failed().await.kind(), io::ErrorKind::BrokenPipe);
    assert!(!outbox.send(Bytes::from_static(b"lost")));
    outbox.hold();
    assert!(!outbox.send(Bytes::from_static(b"lost too")));
    outbox.release();
    assert_eq!(outbox.queued(), 0);
    task.await.expect("the writer ends");
}

#[tokio::test]
async fn writes_messages_in_order_with_newlines_and_closes() {
    let (a, mut b) = tokio::io::duplex(1024);
    let (mut outbox, task) = Outbox::spawn(a);
    for i in 0..100 {
        assert!(outbox.send(Bytes::from(format!("m{i}"))));
    }
    outbox.send(Bytes::from(vec![b'x'; 100_000]));
    // Small messages copied together after a large one still follow it.
    for i in 0..2000 {
        assert!(outbox.send(Bytes::from(format!("after-{i}-{}", "y".repeat(100)))));
    }
    let counted = outbox.shared.clone();
    drop(outbox);
    let mut out = Vec::new();
    b.read_to_end(&mut out).await.expect("read");
    task.await.expect("task");
    let lines: Vec<&[u8]> = out.split(|b| *b == b'\n').collect();
    assert_eq!(lines.len(), 2102);
    assert_eq!(lines[0], b"m0");
    assert_eq!(lines[99], b"m99");
    assert_eq!(lines[100].len(), 100_000);
    assert!(lines[101].starts_with(b"after-0-"));
    assert!(lines[2100].starts_with(b"after-1999-"));
    assert_eq!(lines[2101], b"");
    assert_eq!(counted.queued.load(Ordering::Relaxed), 0, "every byte was counted as written");
    assert_eq!(counted.large.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn reports_congestion_until_the_reader_catches_up() {
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let (mut outbox, _task) = Outbox::spawn(a);
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

async fn written_lines(mut b: tokio::io::DuplexStream) -> Vec<String> {
    let mut out = Vec::new();
    b.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).split('\n').map(str::to_owned).collect()
}

#[tokio::test]
async fn held_messages_keep_their_place_among_the_others() {
    // With the lines queued before still waiting (taken out and appended to) and already
    // written (the held ones start the queue's lines).
    for writer_ran in [false, true] {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (mut outbox, task) = Outbox::spawn(a);
        outbox.send(Bytes::from_static(b"before"));
        if writer_ran {
            tokio::task::yield_now().await;
        }
        outbox.hold();
        for i in 0..3 {
            assert!(outbox.send(Bytes::from(format!("held-{i}"))));
        }
        let before = if writer_ran { 0 } else { 7 };
        assert_eq!(outbox.queued(), before + 3 * 7, "held bytes count as queued");
        // A large message is queued whole, after what was held.
        outbox.send(Bytes::from(vec![b'x'; COALESCE]));
        outbox.send(Bytes::from_static(b"held-again"));
        outbox.release();
        outbox.send(Bytes::from_static(b"after"));
        let counted = outbox.shared.clone();
        drop(outbox);
        let lines = written_lines(b).await;
        task.await.expect("task");
        let short: Vec<&str> = lines.iter().map(|l| if l.len() == COALESCE { "large" } else { l }).collect();
        assert_eq!(short, ["before", "held-0", "held-1", "held-2", "large", "held-again", "after", ""]);
        assert_eq!(counted.queued.load(Ordering::Relaxed), 0, "every byte was counted once");
    }
}

#[tokio::test]
async fn held_messages_count_towards_congestion_and_are_written_on_release() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let (mut outbox, task) = Outbox::spawn(a);
    outbox.hold();
    let line = Bytes::from(vec![b'y'; 1023]);
    for _ in 0..HIGH_WATER / 1024 {
        outbox.send(&line);
    }
    assert!(!outbox.congested());
    outbox.send(&line);
    assert!(outbox.congested(), "held bytes count");
    // Dropping the outbox releases what it holds.
    drop(outbox);
    let lines = written_lines(b).await;
    task.await.expect("task");
    assert_eq!(lines.len(), HIGH_WATER / 1024 + 2);
}
