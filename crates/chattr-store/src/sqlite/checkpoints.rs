//! Background WAL checkpoints on SQLite.
//!
//! The writer checkpoints inline, as SQLite does by default: once the WAL holds
//! `WAL_AUTOCHECKPOINT_PAGES`, the commit that crossed the line copies them into the
//! database file and fsyncs both files before it returns. That keeps the WAL bounded (a
//! checkpoint run by the writer itself finishes, so the next write starts the WAL over),
//! but every send queued behind that commit waits for the copy and the fsyncs. With
//! SQLite's default of 1,000 pages, that set the embedded server's p99.
//!
//! The checkpointer here does the same work ahead of time, on a connection of its own:
//! after every committed batch of sends (and every [`INTERVAL`] otherwise) it runs a
//! passive checkpoint, which copies whatever the WAL holds into the database and fsyncs,
//! without blocking the writer or readers. Under load it runs back to back, so dirty pages
//! reach the disk in a steady stream rather than in bursts the writer has to wait for.
//! When the writer's own checkpoint comes due, nearly everything is already copied and
//! synced, so it costs the frames written since the last pass. The writer's checkpoint
//! stays on: a passive checkpoint alone never catches up with a writer that keeps
//! writing, and the WAL would grow without bound (ADR 0011).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::{StoreError, StoreResult};

/// How often the checkpointer looks at the WAL when no commit has woken it (writes other
/// than sends do not wake it).
pub(super) const INTERVAL: Duration = Duration::from_secs(1);

/// The running checkpointer; [`Checkpointer::stop`] ends it, and so does dropping it.
pub(super) struct Checkpointer {
    /// Wakes the checkpointer: call `notify_one` after a commit.
    kick: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Opens the checkpointer's connection to the database `options` point at and starts it.
    pub(super) async fn start(options: &SqliteConnectOptions) -> StoreResult<Self> {
        let mut conn = options.connect().await?;
        let (stop, mut stopped) = watch::channel(false);
        let kick = Arc::new(Notify::new());
        let kicked = kick.clone();
        let task = tokio::spawn(async move {
            let mut copied = 0;
            loop {
                // Kicks that arrive while a checkpoint runs leave one permit, so commits
                // during a checkpoint lead to exactly one more.
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = kicked.notified() => {}
                    () = tokio::time::sleep(INTERVAL) => {}
                }
                if let Err(e) = checkpoint(&mut conn, &mut copied).await {
                    tracing::warn!(error = %e, "background WAL checkpoint failed");
                }
            }
            // Closing may itself checkpoint (the last connection to the database does).
            let _ = conn.close().await;
        });
        Ok(Self { kick, stop, task: std::sync::Mutex::new(Some(task)) })
    }

    /// What wakes the checkpointer after a commit.
    pub(super) fn kick(&self) -> Arc<Notify> {
        self.kick.clone()
    }

    /// Stops the checkpointer and waits until its connection is closed.
    pub(super) async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// One passive checkpoint. `copied` is how far the WAL had been copied after the last one
/// (frames); the time taken is recorded only when this one copied something.
async fn checkpoint(conn: &mut SqliteConnection, copied: &mut i64) -> StoreResult<()> {
    let started = Instant::now();
    // Columns: busy (another checkpoint was running), frames in the WAL, frames copied.
    let (_, log, now_copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::from)?;
    if now_copied != *copied {
        metrics::histogram!(crate::metrics::CHECKPOINT_SECONDS).record(started.elapsed().as_secs_f64());
    }
    tracing::trace!(log, copied = now_copied, "background WAL checkpoint");
    *copied = now_copied;
    Ok(())
}
