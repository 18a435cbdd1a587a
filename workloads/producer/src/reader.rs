//! Streams the binlog as a replica and turns it into [`Chunk`]s.
//!
//! The reader declares itself a GTID-capable MariaDB replica
//! (`@mariadb_slave_capability=4`, `@slave_connect_state`), or asks MySQL for
//! a GTID-set dump, verifies every event's checksum, asks for heartbeats and
//! treats silence longer than the read timeout as a dead connection: it never
//! stalls silently. Connection trouble means reconnect with exponential
//! backoff and readiness false; the stream resumes at the last transaction
//! boundary it handed on, skipping the records of a split transaction that
//! were already handed on. A purged binlog and an undecodable row are
//! permanent errors that name the position.
//!
//! Sending into the bounded channel waits when the publisher is behind: that
//! is the backpressure that keeps memory bounded.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::EventType;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn};
use paystream_core::checkpoint::Flavor;
use paystream_core::envelope::SnapshotMarker;
use paystream_runtime::readiness::Check;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::OnDecodeError;
use crate::ddl;
use crate::decode::decode_row;
use crate::filter::TableFilter;
use crate::gtid::ServerUuid;
use crate::mariadb_events;
use crate::metrics::ProducerMetrics;
use crate::position::add_gtid;
use crate::records::{ChangeKind, Coordinates, Record, RecordSettings, RowChange};
use crate::schema::{SchemaCache, TableSchema};
use crate::source::{self, SourceOpts};
use crate::topics::{TopicEnsurer, TopicKind};
use crate::txn::{Assembler, Chunk, Progress};

/// Where to start streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPosition {
    /// Server flavour.
    pub flavor: Flavor,
    /// GTID position to resume after.
    pub gtid: String,
    /// Binlog file (used without GTIDs, and for source coordinates).
    pub file: String,
    /// Binlog offset.
    pub pos: u64,
    /// A split transaction to resume: its GTID and the records already published.
    pub partial: Option<(String, u64)>,
}

/// Reader settings.
#[derive(Debug, Clone)]
pub struct ReaderSettings {
    /// Replica server id.
    pub server_id: u32,
    /// Heartbeat period asked of the server.
    pub heartbeat: Duration,
    /// Silence after which the connection is presumed dead.
    pub read_timeout: Duration,
    /// Longest reconnect backoff.
    pub max_backoff: Duration,
    /// Captured tables.
    pub filter: TableFilter,
    /// Record builder.
    pub records: RecordSettings,
    /// Chunk size limit.
    pub max_chunk_records: usize,
    /// Decode error policy.
    pub on_decode_error: OnDecodeError,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
}

/// Why streaming stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// The binlog at the checkpoint was purged from the server.
    #[error(
        "the binlog needed to resume from {position} is no longer on the server ({message}). \
         Fix: restart with --snapshot-mode when_needed to take a new snapshot, or delete the \
         source's checkpoint record to start over"
    )]
    Purged {
        /// The position asked for.
        position: String,
        /// The server's message.
        message: String,
    },
    /// A row could not be decoded (with `--on-decode-error stop`).
    #[error(
        "cannot decode a row of {table} at {file}:{pos} (gtid {gtid}): {reason}. \
             Fix the cause, or restart with --on-decode-error skip to send such rows to the dead-letter topic"
    )]
    Decode {
        /// `db.table`.
        table: String,
        /// Binlog file.
        file: String,
        /// Event position.
        pos: u64,
        /// GTID of the transaction.
        gtid: String,
        /// What failed.
        reason: String,
    },
    /// The database refused us for a reason retrying will not fix.
    #[error("database error that retrying will not fix: {0}")]
    Permanent(String),
    /// The publisher went away (it failed or is shutting down).
    #[error("publisher stopped")]
    PublisherGone,
}

/// A failure of one streaming session.
enum SessionError {
    Transient(String),
    Fatal(ReaderError),
}

impl From<ReaderError> for SessionError {
    fn from(e: ReaderError) -> Self {
        SessionError::Fatal(e)
    }
}

fn classify(position: &StartPosition, e: mysql_async::Error) -> SessionError {
    if source::is_purged(&e) {
        let message = e.to_string();
        SessionError::Fatal(ReaderError::Purged {
            position: if position.gtid.is_empty() {
                format!("{}:{}", position.file, position.pos)
            } else {
                position.gtid.clone()
            },
            message,
        })
    } else if source::is_transient(&e) {
        SessionError::Transient(e.to_string())
    } else {
        SessionError::Fatal(ReaderError::Permanent(e.to_string()))
    }
}

/// A captured table's layout, and the TABLE_MAP to decode its rows with
/// when `mysql_common` needs a patched one (see `decode::table_map_for_rows`).
struct Layout {
    schema: TableSchema,
    patched: Option<mysql_async::binlog::events::TableMapEvent<'static>>,
}

/// The binlog reader.
pub struct Reader {
    settings: ReaderSettings,
    source: SourceOpts,
    metrics: ProducerMetrics,
    ready: Check,
    topics: TopicEnsurer,
    schemas: SchemaCache,
    /// TABLE_MAP id to layout, for the current session (`None`: not captured).
    layouts: HashMap<u64, Option<Layout>>,
    meta: Option<Conn>,
}

impl Reader {
    /// A reader; nothing connects until [`Reader::run`].
    pub fn new(
        settings: ReaderSettings,
        source: SourceOpts,
        metrics: ProducerMetrics,
        ready: Check,
        topics: TopicEnsurer,
    ) -> Self {
        Self {
            settings,
            source,
            metrics,
            ready,
            topics,
            schemas: SchemaCache::new(),
            layouts: HashMap::new(),
            meta: None,
        }
    }

    /// Streams from `start` into `tx` until `shutdown` or a permanent error.
    pub async fn run(
        &mut self,
        start: StartPosition,
        tx: &mpsc::Sender<Chunk>,
        shutdown: &CancellationToken,
    ) -> Result<(), ReaderError> {
        let mut position = start;
        let mut backoff = Duration::from_millis(100);
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let mut assembler = Assembler::new(self.settings.max_chunk_records);
            if let Some((gtid, n)) = position.partial.clone() {
                assembler.resume_skipping(gtid, n);
            }
            let result = self
                .session(&mut position, &mut assembler, tx, shutdown, &mut backoff)
                .await;
            self.ready.set(false);
            // Whatever was half-read is read again after reconnecting.
            if let Some(resume) = assembler.abandon() {
                position.partial = Some(resume);
            }
            match result {
                Ok(()) => return Ok(()),
                Err(SessionError::Fatal(e)) => return Err(e),
                Err(SessionError::Transient(why)) => {
                    self.metrics.reconnects.inc();
                    self.metrics.error("mysql");
                    tracing::warn!(error = %why, retry_in = ?backoff, gtid = %position.gtid, "binlog connection lost; reconnecting");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                }
            }
        }
    }

    async fn session(
        &mut self,
        position: &mut StartPosition,
        asm: &mut Assembler,
        tx: &mpsc::Sender<Chunk>,
        shutdown: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), SessionError> {
        let mut conn = self
            .source
            .connect()
            .await
            .map_err(|e| classify(position, e))?;
        if self.meta.is_none() {
            self.meta = Some(
                self.source
                    .connect()
                    .await
                    .map_err(|e| classify(position, e))?,
            );
        }
        self.layouts.clear();
        let heartbeat_ns = self.settings.heartbeat.as_nanos().to_string();
        conn.query_drop(format!("SET @master_heartbeat_period = {heartbeat_ns}"))
            .await
            .map_err(|e| classify(position, e))?;
        let request = match position.flavor {
            Flavor::Mariadb => {
                conn.query_drop("SET @mariadb_slave_capability = 4")
                    .await
                    .map_err(|e| classify(position, e))?;
                conn.exec_drop("SET @slave_connect_state = ?", (position.gtid.clone(),))
                    .await
                    .map_err(|e| classify(position, e))?;
                conn.query_drop(
                    "SET @slave_gtid_strict_mode = 1, @slave_gtid_ignore_duplicates = 0",
                )
                .await
                .map_err(|e| classify(position, e))?;
                BinlogStreamRequest::new(self.settings.server_id)
            }
            Flavor::Mysql => {
                let set: crate::gtid::MySqlGtidSet = position.gtid.parse().map_err(|e| {
                    SessionError::Fatal(ReaderError::Permanent(format!(
                        "bad GTID set in checkpoint: {e}"
                    )))
                })?;
                let sids = mysql_sids(&set);
                BinlogStreamRequest::new(self.settings.server_id)
                    .with_gtid()
                    .with_gtid_set(sids)
            }
        };
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| classify(position, e))?;
        tracing::info!(gtid = %position.gtid, "streaming binlog");

        let mut current_db = String::new();
        let mut past_preamble = false;
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                n = tokio::time::timeout(self.settings.read_timeout, stream.next()) => n,
            };
            let event = match next {
                Err(_) => {
                    return Err(SessionError::Transient(format!(
                        "no binlog event or heartbeat for {:?}",
                        self.settings.read_timeout
                    )));
                }
                Ok(None) => {
                    return Err(SessionError::Transient(
                        "the server closed the binlog stream".into(),
                    ));
                }
                Ok(Some(Err(e))) => return Err(classify(position, e)),
                Ok(Some(Ok(ev))) => ev,
            };
            if !self.ready.is_ready() {
                self.ready.set(true);
            }
            // The backoff starts again only once the stream is past the
            // server's preamble: a connection that is dropped while the
            // server still seeks the position (e.g. by another replica with
            // the same server id) must keep backing off, or two instances
            // kick each other off every 100 ms and neither gets anywhere.
            if !past_preamble && !mariadb_events::is_preamble(event.header().event_type_raw()) {
                past_preamble = true;
                *backoff = Duration::from_millis(100);
            }
            if let Err(e) = mariadb_events::verify_checksum(&event) {
                self.metrics.error("checksum");
                return Err(SessionError::Transient(e.to_string()));
            }
            let chunks = self.handle(&event, &stream, asm, &mut current_db).await?;
            for chunk in chunks {
                if let Progress::Complete {
                    gtid, file, pos, ..
                } = &chunk.progress
                {
                    if let Some(g) = gtid {
                        position.gtid =
                            add_gtid(position.flavor, &position.gtid, g).map_err(|e| {
                                SessionError::Fatal(ReaderError::Permanent(e.to_string()))
                            })?;
                    }
                    position.file.clone_from(file);
                    position.pos = *pos;
                    position.partial = None;
                }
                tokio::select! {
                    sent = tx.send(chunk) => sent.map_err(|_| ReaderError::PublisherGone)?,
                    _ = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }

    /// Handles one event; returns the chunks it completes.
    async fn handle(
        &mut self,
        event: &Event,
        stream: &mysql_async::BinlogStream,
        asm: &mut Assembler,
        current_db: &mut String,
    ) -> Result<Vec<Chunk>, SessionError> {
        let header = event.header();
        let raw = header.event_type_raw();
        let end_pos = u64::from(header.log_pos());
        let ts_ms = i64::from(header.timestamp()) * 1000;
        let mut out = Vec::new();

        if raw == EventType::ROTATE_EVENT as u8 {
            let (file, _) = mariadb_events::rotate_file_name(event)
                .map_err(|e| SessionError::Transient(format!("bad ROTATE event: {e}")))?;
            asm.rotate(file);
            return Ok(out);
        }
        if let Some(g) = mariadb_events::gtid_event_of(event).map_err(|e| {
            SessionError::Transient(format!("bad GTID event at {}:{end_pos}: {e}", asm.file()))
        })? {
            asm.begin(Some(g.gtid.to_string()), g.standalone);
            return Ok(out);
        }
        if raw == mariadb_events::GTID_LIST_EVENT
            || raw == mariadb_events::BINLOG_CHECKPOINT_EVENT
            || raw == mariadb_events::ANNOTATE_ROWS_EVENT
            || raw == EventType::HEARTBEAT_EVENT as u8
            || raw == EventType::FORMAT_DESCRIPTION_EVENT as u8
        {
            return Ok(out);
        }
        let data = event.read_data().map_err(|e| {
            SessionError::Fatal(ReaderError::Decode {
                table: "?".into(),
                file: asm.file().to_string(),
                pos: end_pos,
                gtid: asm.open_gtid().unwrap_or_default().to_string(),
                reason: format!("undecodable event of type {raw}: {e}"),
            })
        })?;
        match data {
            Some(EventData::GtidEvent(g)) => {
                let uuid = ServerUuid::from_bytes(g.sid());
                asm.begin(Some(format!("{uuid}:{}", g.gno())), false);
            }
            Some(EventData::QueryEvent(q)) => {
                let sql = q.query();
                let trimmed = sql.trim();
                *current_db = q.schema().into_owned();
                if trimmed.eq_ignore_ascii_case("BEGIN") {
                    asm.begin_query();
                } else if trimmed.eq_ignore_ascii_case("COMMIT") {
                    out.push(asm.commit(end_pos, ts_ms));
                } else if trimmed.eq_ignore_ascii_case("ROLLBACK") {
                    out.push(asm.rollback(end_pos, ts_ms));
                } else {
                    let effect = ddl::ddl_touched_tables(current_db, trimmed);
                    if let ddl::DdlEffect::Tables {
                        op: ddl::DdlOp::Truncate,
                        tables,
                    } = &effect
                    {
                        for t in tables {
                            if self.settings.filter.captures(&t.db, &t.table) {
                                self.metrics.error("truncate");
                                tracing::error!(table = %format!("{}.{}", t.db, t.table), file = asm.file(), pos = end_pos,
                                    "TRUNCATE of a captured table is not propagated as row changes; take a new snapshot to resync readers");
                            }
                        }
                    }
                    self.schemas.apply(&effect);
                    self.layouts.clear();
                    if asm.open_is_standalone() || !asm.in_transaction() {
                        out.push(asm.commit(end_pos, ts_ms));
                    }
                }
            }
            Some(EventData::XidEvent(_)) => out.push(asm.commit(end_pos, ts_ms)),
            Some(EventData::TableMapEvent(tme)) => {
                let (db, table) = (
                    tme.database_name().into_owned(),
                    tme.table_name().into_owned(),
                );
                let table_id = tme.table_id();
                if !self.settings.filter.captures(&db, &table) {
                    self.layouts.insert(table_id, None);
                    return Ok(out);
                }
                let meta = self
                    .meta
                    .as_mut()
                    .ok_or_else(|| SessionError::Transient("metadata connection missing".into()))?;
                let info = match self.schemas.get_or_load(meta, &db, &table).await {
                    Ok(info) => Some(info.clone()),
                    Err(e) => {
                        // The table may be gone already (dropped later in the
                        // binlog); the TABLE_MAP's own metadata still names the
                        // columns, so decode without information_schema.
                        tracing::debug!(error = %e, db, table, "no information_schema layout");
                        None
                    }
                };
                let layout = TableSchema::from_table_map(&tme, info.as_ref()).map_err(|e| {
                    SessionError::Fatal(ReaderError::Decode {
                        table: format!("{db}.{table}"),
                        file: asm.file().to_string(),
                        pos: end_pos,
                        gtid: asm.open_gtid().unwrap_or_default().to_string(),
                        reason: e.to_string(),
                    })
                })?;
                let topic = paystream_core::envelope::change_topic(
                    &self.settings.records.prefix,
                    &db,
                    &table,
                );
                self.topics
                    .ensure(&topic, TopicKind::Change)
                    .await
                    .map_err(|e| SessionError::Transient(e.to_string()))?;
                let patched = crate::decode::table_map_for_rows(&tme).map_err(|e| {
                    SessionError::Fatal(ReaderError::Decode {
                        table: format!("{db}.{table}"),
                        file: asm.file().to_string(),
                        pos: end_pos,
                        gtid: asm.open_gtid().unwrap_or_default().to_string(),
                        reason: e.to_string(),
                    })
                })?;
                self.layouts.insert(
                    table_id,
                    Some(Layout {
                        schema: layout,
                        patched,
                    }),
                );
            }
            Some(EventData::RowsEvent(rows)) => {
                let start_pos = end_pos.saturating_sub(u64::from(header.event_size()));
                let at = RowsAt {
                    server_id: header.server_id(),
                    start_pos,
                    ts_ms,
                };
                let records = self.rows(&rows, stream, asm, at)?;
                let stmt_end = rows
                    .flags()
                    .contains(mysql_async::binlog::RowsEventFlags::STMT_END);
                if let Some(chunk) = asm
                    .push(records, end_pos)
                    .map_err(|e| SessionError::Fatal(ReaderError::Permanent(e.to_string())))?
                {
                    out.push(chunk);
                }
                if stmt_end && asm.open_is_standalone() {
                    out.push(asm.commit(end_pos, ts_ms));
                }
            }
            _ => {}
        }
        Ok(out)
    }

    fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
        stream: &mysql_async::BinlogStream,
        asm: &Assembler,
        at: RowsAt,
    ) -> Result<Vec<Record>, SessionError> {
        let RowsAt {
            server_id,
            start_pos,
            ts_ms,
        } = at;
        let table_id = rows.table_id();
        let Some(Some(Layout {
            schema: layout,
            patched,
        })) = self.layouts.get(&table_id)
        else {
            return Ok(Vec::new());
        };
        let Some(tme) = patched.as_ref().or_else(|| stream.get_tme(table_id)) else {
            return Err(SessionError::Transient(format!(
                "row event for unknown table id {table_id} at {}:{start_pos}",
                asm.file()
            )));
        };
        let kind = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                ChangeKind::Insert
            }
            RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => ChangeKind::Update,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                ChangeKind::Delete
            }
        };
        let gtid = asm.open_gtid().map(str::to_string);
        let mut out = Vec::new();
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (index, row) in rows.rows(tme).enumerate() {
            let fail = |reason: String| ReaderError::Decode {
                table: format!("{}.{}", layout.db, layout.table),
                file: asm.file().to_string(),
                pos: start_pos,
                gtid: gtid.clone().unwrap_or_default(),
                reason: format!("row {index}: {reason}"),
            };
            let decoded = row
                .map_err(|e| fail(e.to_string()))
                .and_then(|(before, after)| {
                    let b = before.as_ref().map(|r| decode_row(layout, r)).transpose();
                    let a = after.as_ref().map(|r| decode_row(layout, r)).transpose();
                    match (b, a) {
                        (Ok(b), Ok(a)) => Ok((b, a)),
                        (Err(e), _) | (_, Err(e)) => Err(fail(e.to_string())),
                    }
                });
            let (before, after) = match decoded {
                Ok(images) => images,
                Err(err) => match self.settings.on_decode_error {
                    OnDecodeError::Stop => return Err(SessionError::Fatal(err)),
                    OnDecodeError::Skip => {
                        tracing::error!(error = %err, "row sent to the dead-letter topic");
                        self.metrics.dead_letters.inc();
                        out.push(dead_letter(&self.settings.dead_letter_topic, &err));
                        continue;
                    }
                },
            };
            let change = RowChange {
                db: &layout.db,
                table: &layout.table,
                key_columns: &layout.primary_key,
                kind,
                before,
                after,
                coords: Coordinates {
                    server_id,
                    gtid: gtid.clone(),
                    file: asm.file().to_string(),
                    pos: start_pos,
                    row: u32::try_from(index).unwrap_or(u32::MAX),
                    ts_ms,
                    snapshot: SnapshotMarker::False,
                },
            };
            self.settings
                .records
                .build(change, now_ms, &mut out)
                .map_err(|e| SessionError::Fatal(ReaderError::Permanent(e.to_string())))?;
        }
        Ok(out)
    }
}

fn dead_letter(topic: &str, err: &ReaderError) -> Record {
    let value = serde_json::json!({
        "reason": err.to_string(),
        "source": match err {
            ReaderError::Decode { table, file, pos, gtid, .. } => serde_json::json!({
                "table": table, "file": file, "pos": pos, "gtid": gtid,
            }),
            _ => serde_json::Value::Null,
        },
    });
    Record {
        topic: topic.to_string(),
        key: None,
        value: serde_json::to_vec(&value).ok(),
    }
}

/// Where a rows event sits in the binlog.
#[derive(Debug, Clone, Copy)]
struct RowsAt {
    server_id: u32,
    start_pos: u64,
    ts_ms: i64,
}

/// The GTID set in the form of a MySQL `COM_BINLOG_DUMP_GTID` request
/// (intervals there are half-open).
fn mysql_sids(set: &crate::gtid::MySqlGtidSet) -> Vec<mysql_async::Sid<'static>> {
    set.uuids()
        .map(|uuid| {
            let intervals = set
                .intervals(uuid)
                .iter()
                .map(|&(start, end)| mysql_async::GnoInterval::new(start, end + 1))
                .collect();
            mysql_async::Sid::new(uuid.0).with_intervals(intervals)
        })
        .collect()
}
