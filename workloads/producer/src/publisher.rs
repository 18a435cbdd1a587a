//! Publishes chunks to Kafka exactly once: the records of one or more source
//! transactions and the checkpoint that covers them go into one Kafka
//! transaction. A crash before the commit leaves nothing visible to
//! `read_committed` readers; after it, the checkpoint says exactly where to
//! resume. The fixed transactional id fences any older instance of the same
//! source (a zombie can no longer commit).
//!
//! Batching trades latency for throughput: a Kafka transaction closes when it
//! holds `batch_max_records` records or has been open `batch_linger`. When the
//! linger runs out, the chunks already queued by then are still taken, without
//! waiting, up to `batch_max_records`: under load, closing a batch while its
//! successors wait in the channel would only make more, smaller transactions,
//! fill the channel and stall the reader. Memory is bounded by the reader's
//! channel and librdkafka's queue limits: when the queue is full, sending
//! waits, which in turn slows the reader.
//!
//! A broker that goes away mid-transaction is noticed by the stall guard: no
//! acknowledgement (or no commit answer) for `stall_timeout` abandons the
//! transaction (purged, aborted if the broker answers) and the session ends,
//! so the caller starts a new one from the last checkpoint once the broker is
//! back, instead of sitting until the transaction times out. Fencing is kept:
//! the new session's `init_transactions` bumps the epoch, which finishes or
//! aborts whatever the old one left open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use paystream_core::checkpoint::{Checkpoint, SnapshotState};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::ProducerMetrics;
use crate::position;
use crate::txn::Chunk;

/// Publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// The transactional id; fixed per source so instances fence each other.
    pub transactional_id: String,
    /// Checkpoint topic.
    pub checkpoint_topic: String,
    /// Close a Kafka transaction at this many records.
    pub batch_max_records: usize,
    /// Close a Kafka transaction after it has been open this long.
    pub batch_linger: Duration,
    /// Timeout of transactional calls (init, commit, abort).
    pub txn_timeout: Duration,
    /// The longest wait for the next acknowledgement or for a commit's
    /// answer before the transaction is abandoned (the stall guard).
    pub stall_timeout: Duration,
    /// When idle, write a checkpoint at most this often if the position moved.
    pub idle_checkpoint_interval: Duration,
}

/// Publishing failed; the caller restarts from the last committed checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A Kafka call failed.
    #[error("kafka {op}: {source}")]
    Kafka {
        /// The operation.
        op: &'static str,
        /// The cause.
        #[source]
        source: KafkaError,
    },
    /// The checkpoint could not be advanced.
    #[error(transparent)]
    Position(#[from] position::PositionError),
    /// The checkpoint could not be encoded.
    #[error("encoding checkpoint: {0}")]
    Encode(#[from] serde_json::Error),
    /// Kafka stopped answering in the middle of a transaction.
    #[error("kafka {op}: no answer for {after:?}; transaction abandoned")]
    Stalled {
        /// The operation that waited.
        op: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// A blocking task panicked or was cancelled.
    #[error("blocking kafka call did not complete: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Waits for the acknowledgement of every record; the first failure, if
/// any (the transaction must then be aborted). Waiting more than `stall` for
/// the next acknowledgement is a failure too: the broker is gone.
async fn delivered<F, T, M, C>(
    deliveries: impl IntoIterator<Item = F>,
    stall: Duration,
) -> Result<(), PublishError>
where
    F: std::future::Future<Output = Result<Result<T, (KafkaError, M)>, C>>,
{
    for d in deliveries {
        match tokio::time::timeout(stall, d).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err((e, _)))) => return Err(kafka("send")(e)),
            Ok(Err(_)) => return Err(kafka("send")(KafkaError::Canceled)),
            Err(_) => {
                return Err(PublishError::Stalled {
                    op: "send",
                    after: stall,
                });
            }
        }
    }
    Ok(())
}

fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> PublishError {
    move |source| PublishError::Kafka { op, source }
}

/// What the batch loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Wait up to this long (what is left of the linger) for another chunk.
    Wait(Duration),
    /// Take a chunk that is already queued, without waiting.
    TakeQueued,
    /// Close the batch and commit it.
    Close,
}

/// Whether a batch may wait for a later transaction instead of being
/// committed now: it has no records, it was not long since the last commit,
/// and it does not change the snapshot's state. The end of a snapshot that
/// read no rows is committed at once: folded, a crash before the next commit
/// left no checkpoint, so the restart took the snapshot again and the changes
/// made meanwhile came out as snapshot reads (a row inserted and deleted in
/// that moment never came out). Pure.
fn may_fold(
    records: usize,
    from: &Checkpoint,
    to: &Checkpoint,
    since_commit: Duration,
    interval: Duration,
) -> bool {
    records == 0 && from.snapshot == to.snapshot && since_commit < interval
}

/// The batch loop's decision for a batch holding `records` records, with
/// `linger_left` of its linger left and, once that is zero, `queued` chunks
/// left of those that were queued when the linger ran out. Pure.
fn next_step(records: usize, max_records: usize, linger_left: Duration, queued: usize) -> Step {
    if records >= max_records {
        Step::Close
    } else if !linger_left.is_zero() {
        Step::Wait(linger_left)
    } else if queued > 0 {
        Step::TakeQueued
    } else {
        Step::Close
    }
}

/// The transactional Kafka publisher.
pub struct Publisher {
    producer: Arc<FutureProducer>,
    settings: PublisherSettings,
    metrics: ProducerMetrics,
}

impl Publisher {
    /// Creates the producer and initialises transactions, fencing older
    /// instances with the same transactional id.
    pub async fn connect(
        base: &ClientConfig,
        settings: PublisherSettings,
        metrics: ProducerMetrics,
    ) -> Result<Self, PublishError> {
        let producer: FutureProducer = base
            .clone()
            .set("transactional.id", &settings.transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "transaction.timeout.ms",
                (settings.txn_timeout.as_millis().max(1000)).to_string(),
            )
            // Java clients' partitioner, so keys land where JVM services expect.
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            // Back-to-back transactions: the broker answers "concurrent
            // transactions" while the previous commit's markers are being
            // written; librdkafka's default 100 ms retry backoff would add
            // that much to every commit.
            .set("retry.backoff.ms", "5")
            .set("retry.backoff.max.ms", "100")
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "65536")
            .create()
            .map_err(kafka("create producer"))?;
        let producer = Arc::new(producer);
        let p = producer.clone();
        // Bounded so an unreachable cluster is reported quickly and retried.
        let timeout = settings.txn_timeout.min(Duration::from_secs(15));
        tokio::task::spawn_blocking(move || p.init_transactions(timeout))
            .await?
            .map_err(kafka("init_transactions"))?;
        Ok(Self {
            producer,
            settings,
            metrics,
        })
    }

    /// Publishes chunks from `rx` until it closes or `shutdown` fires, starting
    /// from `checkpoint`. On shutdown, the open batch is committed first.
    /// Returns the last committed checkpoint.
    pub async fn run(
        &self,
        mut checkpoint: Checkpoint,
        rx: &mut mpsc::Receiver<Chunk>,
        shutdown: &CancellationToken,
        committed: &watch::Sender<SnapshotState>,
    ) -> Result<Checkpoint, PublishError> {
        let mut last_commit = Instant::now();
        let mut dirty = false;
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => None,
                c = rx.recv() => c,
                _ = tokio::time::sleep(self.settings.idle_checkpoint_interval), if dirty => {
                    // Quiet source: persist the moved position on its own.
                    self.commit_batch(&[], &checkpoint).await?;
                    committed.send_replace(checkpoint.snapshot.clone());
                    dirty = false;
                    last_commit = Instant::now();
                    continue;
                }
            };
            let Some(first) = first else {
                if dirty {
                    self.commit_batch(&[], &checkpoint).await?;
                    committed.send_replace(checkpoint.snapshot.clone());
                }
                return Ok(checkpoint);
            };
            let opened = Instant::now();
            let mut batch = Vec::new();
            let mut next = checkpoint.clone();
            position::advance(&mut next, &first.progress)?;
            batch.push(first);
            let mut records: usize = batch[0].records.len();
            // Chunks that were queued when the linger ran out and that the
            // batch has not taken yet; `None` while it lingers. Counting them
            // once bounds the batch even when the reader refills the channel
            // as fast as it is emptied (e.g. records-less chunks).
            let mut queued: Option<usize> = None;
            loop {
                let linger_left = self.settings.batch_linger.saturating_sub(opened.elapsed());
                let queued_left = if linger_left.is_zero() {
                    *queued.get_or_insert_with(|| rx.len())
                } else {
                    0
                };
                let step = next_step(
                    records,
                    self.settings.batch_max_records,
                    linger_left,
                    queued_left,
                );
                let chunk = match step {
                    Step::Close => break,
                    Step::Wait(wait) => {
                        let got = tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => break,
                            c = tokio::time::timeout(wait, rx.recv()) => c,
                        };
                        match got {
                            Ok(Some(chunk)) => chunk,
                            // The reader is gone.
                            Ok(None) => break,
                            // The linger ran out: take what is queued.
                            Err(_elapsed) => continue,
                        }
                    }
                    Step::TakeQueued => {
                        if shutdown.is_cancelled() {
                            break;
                        }
                        queued = Some(queued_left - 1);
                        match rx.try_recv() {
                            Ok(chunk) => chunk,
                            Err(_) => break,
                        }
                    }
                };
                position::advance(&mut next, &chunk.progress)?;
                records += chunk.records.len();
                batch.push(chunk);
            }
            if may_fold(
                records,
                &checkpoint,
                &next,
                last_commit.elapsed(),
                self.settings.idle_checkpoint_interval,
            ) {
                // Only position moves (filtered tables, DDL): fold them into a
                // later transaction instead of committing an empty one now.
                checkpoint = next;
                dirty = true;
                continue;
            }
            self.commit_batch(&batch, &next).await?;
            committed.send_replace(next.snapshot.clone());
            checkpoint = next;
            dirty = false;
            last_commit = Instant::now();
        }
    }

    /// Commits a transaction holding only `checkpoint`.
    pub async fn commit_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), PublishError> {
        self.commit_batch(&[], checkpoint).await
    }

    async fn commit_batch(
        &self,
        batch: &[Chunk],
        checkpoint: &Checkpoint,
    ) -> Result<(), PublishError> {
        let started = Instant::now();
        self.producer
            .begin_transaction()
            .map_err(kafka("begin_transaction"))?;
        let mut count = 0u64;
        let mut deliveries =
            Vec::with_capacity(batch.iter().map(|c| c.records.len()).sum::<usize>() + 1);
        for chunk in batch {
            for r in &chunk.records {
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic);
                if let Some(k) = &r.key {
                    rec = rec.key(k.as_slice());
                }
                if let Some(v) = &r.value {
                    rec = rec.payload(v.as_slice());
                }
                deliveries.push(self.enqueue(rec).await?);
                count += 1;
            }
        }
        let cp = serde_json::to_vec(checkpoint)?;
        let rec = FutureRecord::to(&self.settings.checkpoint_topic)
            .key(checkpoint.source.as_bytes())
            .payload(cp.as_slice());
        deliveries.push(self.enqueue(rec).await?);

        // Wait for every acknowledgement here, where the producer's poll
        // thread wakes us, before committing: the client's commit first
        // flushes, and a flush that finds reports not yet handed out sleeps
        // in 100 ms polls, which used to add up to 100 ms to every commit.
        let p = self.producer.clone();
        let stall = self.settings.stall_timeout;
        let committed = match delivered(deliveries, stall).await {
            Ok(()) => tokio::task::spawn_blocking(move || {
                // Our records are acknowledged, but the client may still
                // count one whose report it is handing out: the commit's
                // flush would then sleep in a 100 ms poll (1 to 2 % of
                // commits, the p99). Wait out that moment in short steps.
                await_drained(|| p.in_flight_count(), DRAIN_BUDGET);
                p.commit_transaction(stall)
            })
            .await?
            .map_err(|e| commit_error(e, stall)),
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            let stalled = matches!(e, PublishError::Stalled { .. });
            if stalled {
                self.metrics.error("kafka_stall");
            }
            self.abandon(!stalled).await;
            return Err(e);
        }
        self.metrics
            .record_commit(count, checkpoint, started.elapsed());
        Ok(())
    }

    /// Drops the open transaction: what is queued or in flight is purged,
    /// and the transaction aborted if `abort` (a broker that stopped
    /// answering is not asked: the next session's `init_transactions` aborts
    /// it once the broker is back, and asking would only add a timeout).
    async fn abandon(&self, abort: bool) {
        let p = self.producer.clone();
        let stall = self.settings.stall_timeout;
        let aborted = tokio::task::spawn_blocking(move || {
            p.purge(PurgeConfig::default().queue().inflight());
            if abort {
                p.abort_transaction(stall)
            } else {
                Ok(())
            }
        })
        .await;
        if let Ok(Err(e)) = aborted {
            tracing::warn!(error = %e, "abort_transaction failed; the next session's init aborts it");
        }
    }

    /// Enqueues one record, waiting while librdkafka's queue is full: this is
    /// the backpressure that bounds memory under bursts. The future resolves
    /// when the broker has acknowledged the record.
    async fn enqueue(
        &self,
        mut rec: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<DeliveryFuture, PublishError> {
        loop {
            match self.producer.send_result(rec) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.metrics.backpressure_waits.inc();
                    rec = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(kafka("send")(e)),
            }
        }
    }
}

/// A failed commit: a timeout means the broker did not answer in time.
fn commit_error(e: KafkaError, stall: Duration) -> PublishError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::OperationTimedOut) => PublishError::Stalled {
            op: "commit_transaction",
            after: stall,
        },
        _ => kafka("commit_transaction")(e),
    }
}

/// How long a commit waits for the client's count of outstanding records
/// to reach 0 before it commits anyway (and the client flushes).
const DRAIN_BUDGET: Duration = Duration::from_millis(20);

/// Waits, in 100 µs steps and at most `budget`, until `outstanding()` is 0;
/// returns whether it got there. Blocking.
fn await_drained(outstanding: impl Fn() -> i32, budget: Duration) -> bool {
    let deadline = Instant::now() + budget;
    loop {
        if outstanding() <= 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Ack = Result<Result<(), (KafkaError, ())>, ()>;

    #[tokio::test]
    async fn an_acknowledgement_that_never_comes_is_a_stall() {
        let stall = Duration::from_millis(50);
        let ok = || Box::pin(std::future::ready::<Ack>(Ok(Ok(()))));
        let all: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Ack> + Send>>> =
            vec![ok(), ok()];
        assert!(delivered(all, stall).await.is_ok());

        let started = Instant::now();
        let hung: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Ack> + Send>>> =
            vec![ok(), Box::pin(std::future::pending::<Ack>()), ok()];
        let e = delivered(hung, stall).await;
        assert!(
            matches!(e, Err(PublishError::Stalled { op: "send", .. })),
            "{e:?}"
        );
        assert!(started.elapsed() >= stall);

        let failed: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Ack> + Send>>> = vec![
            ok(),
            Box::pin(std::future::ready::<Ack>(Ok(Err((
                KafkaError::Canceled,
                (),
            ))))),
        ];
        assert!(matches!(
            delivered(failed, stall).await,
            Err(PublishError::Kafka { op: "send", .. })
        ));
    }

    #[test]
    fn a_commit_timeout_is_a_stall_and_other_errors_are_not() {
        let stall = Duration::from_secs(5);
        // commit_transaction reports a KafkaError::Transaction with this
        // code; the mapping looks at the code only.
        let timed_out = KafkaError::Global(RDKafkaErrorCode::OperationTimedOut);
        assert!(matches!(
            commit_error(timed_out, stall),
            PublishError::Stalled {
                op: "commit_transaction",
                ..
            }
        ));
        assert!(matches!(
            commit_error(KafkaError::Canceled, stall),
            PublishError::Kafka {
                op: "commit_transaction",
                ..
            }
        ));
    }

    #[test]
    fn drained_waits_for_zero_within_its_budget() {
        let left = std::sync::atomic::AtomicI32::new(3);
        let count = || {
            left.fetch_sub(1, std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(1)
        };
        assert!(await_drained(count, Duration::from_secs(1)));
        assert!(!await_drained(|| 1, Duration::from_millis(2)));
        assert!(await_drained(|| 0, Duration::ZERO));
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_young_batch_waits_for_what_is_left_of_the_linger() {
        assert_eq!(next_step(1, 100, 3 * MS, 0), Step::Wait(3 * MS));
        assert_eq!(next_step(1, 100, 3 * MS, 5), Step::Wait(3 * MS));
    }

    #[test]
    fn after_the_linger_the_queued_chunks_are_taken_before_closing() {
        // The regression: the batch closed here while chunks were queued.
        assert_eq!(next_step(1, 100, Duration::ZERO, 5), Step::TakeQueued);
        assert_eq!(next_step(99, 100, Duration::ZERO, 1), Step::TakeQueued);
        // Records-less chunks (position moves) are taken too.
        assert_eq!(next_step(0, 100, Duration::ZERO, 1), Step::TakeQueued);
        assert_eq!(next_step(1, 100, Duration::ZERO, 0), Step::Close);
    }

    fn checkpoint(snapshot: SnapshotState, pos: u64) -> Checkpoint {
        Checkpoint {
            source: "p".into(),
            flavor: paystream_core::checkpoint::Flavor::Mariadb,
            gtid: String::new(),
            file: "mariadb-bin.000001".into(),
            pos,
            last_event_ts_ms: 0,
            partial: None,
            snapshot,
        }
    }

    #[test]
    fn position_moves_fold_but_the_end_of_a_snapshot_is_committed_at_once() {
        let second = Duration::from_secs(1);
        let done = checkpoint(SnapshotState::Done, 4);
        // A position move without records waits for a later transaction,
        // until the interval has passed.
        assert!(may_fold(
            0,
            &done,
            &checkpoint(SnapshotState::Done, 9),
            MS,
            second
        ));
        assert!(!may_fold(
            0,
            &done,
            &checkpoint(SnapshotState::Done, 9),
            second,
            second
        ));
        assert!(!may_fold(
            3,
            &done,
            &checkpoint(SnapshotState::Done, 9),
            MS,
            second
        ));
        // A snapshot that read no rows ends with a records-less batch: it is
        // committed now, whatever the interval.
        let running = checkpoint(SnapshotState::Running, 4);
        assert!(!may_fold(0, &running, &done, MS, second));
        assert!(may_fold(
            0,
            &running,
            &checkpoint(SnapshotState::Running, 4),
            MS,
            second
        ));
    }

    #[test]
    fn a_full_batch_closes_whatever_is_queued_or_left_of_the_linger() {
        assert_eq!(next_step(100, 100, Duration::ZERO, 5), Step::Close);
        assert_eq!(next_step(150, 100, Duration::ZERO, 5), Step::Close);
        assert_eq!(next_step(100, 100, 3 * MS, 0), Step::Close);
    }
}
