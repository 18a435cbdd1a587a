//! Publishes chunks to Kafka exactly once: the records of one or more source
//! transactions and the checkpoint that covers them go into one Kafka
//! transaction. A crash before the commit leaves nothing visible to
//! `read_committed` readers; after it, the checkpoint says exactly where to
//! resume. The fixed transactional id fences any older instance of the same
//! source (a zombie can no longer commit).
//!
//! Batching trades latency for throughput: a Kafka transaction closes when it
//! holds `batch_max_records` records or has been open `batch_linger`. Memory is
//! bounded by the reader's channel and librdkafka's queue limits: when the
//! queue is full, sending waits, which in turn slows the reader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use paystream_core::checkpoint::Checkpoint;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
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
    /// A blocking task panicked or was cancelled.
    #[error("blocking kafka call did not complete: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Waits for the acknowledgement of every record; the first failure, if
/// any (the transaction must then be aborted).
async fn delivered(deliveries: Vec<DeliveryFuture>) -> Result<(), KafkaError> {
    for d in deliveries {
        match d.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(())
}

fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> PublishError {
    move |source| PublishError::Kafka { op, source }
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
                    dirty = false;
                    last_commit = Instant::now();
                    continue;
                }
            };
            let Some(first) = first else {
                if dirty {
                    self.commit_batch(&[], &checkpoint).await?;
                }
                return Ok(checkpoint);
            };
            let opened = Instant::now();
            let mut batch = Vec::new();
            let mut next = checkpoint.clone();
            position::advance(&mut next, &first.progress)?;
            batch.push(first);
            let mut records: usize = batch[0].records.len();
            while records < self.settings.batch_max_records {
                let remaining = self.settings.batch_linger.saturating_sub(opened.elapsed());
                if remaining.is_zero() {
                    break;
                }
                let more = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => None,
                    c = tokio::time::timeout(remaining, rx.recv()) => c.ok().flatten(),
                };
                let Some(chunk) = more else { break };
                position::advance(&mut next, &chunk.progress)?;
                records += chunk.records.len();
                batch.push(chunk);
            }
            if records == 0 && last_commit.elapsed() < self.settings.idle_checkpoint_interval {
                // Only position moves (filtered tables, DDL): fold them into a
                // later transaction instead of committing an empty one now.
                checkpoint = next;
                dirty = true;
                continue;
            }
            self.commit_batch(&batch, &next).await?;
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
        let timeout = self.settings.txn_timeout;
        let delivered = delivered(deliveries).await;
        let committed = match delivered {
            Ok(()) => tokio::task::spawn_blocking(move || p.commit_transaction(timeout)).await?,
            Err(e) => Err(e),
        };
        if let Err(e) = committed {
            let p = self.producer.clone();
            let _ = tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await;
            return Err(PublishError::Kafka {
                op: "commit_transaction",
                source: e,
            });
        }
        self.metrics
            .record_commit(count, checkpoint, started.elapsed());
        Ok(())
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
