//! Collecting work handed over by many sockets into batches (the heartbeat and goodbye
//! batchers).

use std::time::Duration;

use tokio::sync::mpsc;

/// Waits for the next item, then `window` for others (none if zero: only those already
/// waiting), and moves up to `max` of them into `batch` (which should be empty). Returns
/// false once the queue is closed and empty.
pub(super) async fn collect<T>(
    queue: &mut mpsc::UnboundedReceiver<T>,
    batch: &mut Vec<T>,
    window: Duration,
    max: usize,
) -> bool {
    if queue.recv_many(batch, max).await == 0 {
        return false;
    }
    top_up(queue, batch, window, max).await;
    true
}

/// Waits `window` (none if zero), then moves whatever else is waiting into `batch`, up to
/// `max` in all.
pub(super) async fn top_up<T>(
    queue: &mut mpsc::UnboundedReceiver<T>,
    batch: &mut Vec<T>,
    window: Duration,
    max: usize,
) {
    if !window.is_zero() {
        tokio::time::sleep(window).await;
    }
    // Whatever else came in meanwhile, without waiting for more.
    while batch.len() < max {
        match queue.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_batch_takes_what_arrives_within_the_window_up_to_the_limit() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut batch = Vec::new();
        tx.send(1).unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            for n in 2..=5 {
                late.send(n).unwrap();
            }
        });
        assert!(collect(&mut rx, &mut batch, Duration::from_millis(50), 3).await);
        assert_eq!(batch, [1, 2, 3], "the window gathers later items, up to the limit");
        batch.clear();
        assert!(collect(&mut rx, &mut batch, Duration::from_millis(50), 3).await);
        assert_eq!(batch, [4, 5]);
        batch.clear();
        drop(tx);
        assert!(!collect(&mut rx, &mut batch, Duration::from_millis(50), 3).await, "closed and empty");
    }
}
