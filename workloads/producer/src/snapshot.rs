//! The initial consistent snapshot, taken without any lock.
//!
//! On MariaDB, `START TRANSACTION WITH CONSISTENT SNAPSHOT` pins a read view
//! and `SHOW STATUS LIKE 'binlog_snapshot_%'` names the binlog file and offset
//! that view corresponds to; `BINLOG_GTID_POS()` turns them into the GTID
//! position to stream from. Every captured table is then read inside that one
//! transaction, in primary-key order with keyset pagination (`WHERE pk > last
//! ORDER BY pk LIMIT n`), and published as `op = r` events. Streaming starts
//! at exactly the snapshot position, so no change is missed or doubled.
//!
//! A crash during the snapshot restarts it from the beginning (the checkpoint
//! says `Running`): snapshot reads may then repeat, which consumers absorb
//! because a read carries the row's version. Streamed changes are exactly once.

use mysql_async::prelude::*;
use mysql_async::{Conn, Value as MyValue};
use paystream_core::checkpoint::Flavor;
use paystream_core::envelope::{Row, SnapshotMarker};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::filter::TableFilter;
use crate::metrics::ProducerMetrics;
use crate::records::{ChangeKind, Coordinates, Record, RecordSettings, RowChange};
use crate::schema::{TableInfo, load_table_info};
use crate::snapshot_values::row_to_json;
use crate::source::{self, SourceOpts};
use crate::topics::{TopicEnsurer, TopicKind};
use crate::txn::{Chunk, Progress};

/// The position a snapshot corresponds to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPosition {
    /// GTID position to stream from.
    pub gtid: String,
    /// Binlog file.
    pub file: String,
    /// Binlog offset.
    pub pos: u64,
}

/// The snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The database failed.
    #[error("snapshot query failed: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// Only MariaDB exposes the binlog position of a consistent snapshot.
    #[error(
        "snapshots are supported on MariaDB only; on MySQL start with --snapshot-mode never \
         after loading the tables by other means"
    )]
    UnsupportedFlavor,
    /// The server did not report the snapshot's binlog position.
    #[error("the server did not report binlog_snapshot_file/position (is log_bin on?)")]
    NoPosition,
    /// A table layout could not be read.
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    /// A value could not be converted.
    #[error("table {table}: {source}")]
    Value {
        /// `db.table`.
        table: String,
        /// The cause.
        #[source]
        source: crate::snapshot_values::SnapshotValueError,
    },
    /// A record could not be built.
    #[error(transparent)]
    Record(#[from] crate::records::RecordError),
    /// A topic could not be created.
    #[error(transparent)]
    Topic(#[from] crate::topics::TopicError),
    /// The publisher went away.
    #[error("publisher stopped during the snapshot")]
    PublisherGone,
    /// Shutdown was requested.
    #[error("shutdown requested during the snapshot")]
    Cancelled,
}

/// Snapshot settings.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// Captured tables.
    pub filter: TableFilter,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// Record builder.
    pub records: RecordSettings,
}

/// Takes the snapshot and sends it as chunks; returns where streaming starts.
pub async fn run(
    source: &SourceOpts,
    settings: &SnapshotSettings,
    topics: &mut TopicEnsurer,
    metrics: &ProducerMetrics,
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
) -> Result<SnapshotPosition, SnapshotError> {
    let mut conn = source.connect().await?;
    if source::flavor(&mut conn).await? != Flavor::Mariadb {
        return Err(SnapshotError::UnsupportedFlavor);
    }
    conn.query_drop("SET SESSION time_zone = '+00:00'").await?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    let at = snapshot_position(&mut conn).await?;
    tracing::info!(gtid = %at.gtid, file = %at.file, pos = at.pos, "snapshot started");

    let tables = captured_tables(&mut conn, &settings.filter).await?;
    let mut meta = source.connect().await?;
    let started_ms = chrono::Utc::now().timestamp_millis();
    let progress = |done: bool| Progress::Snapshot {
        gtid: at.gtid.clone(),
        file: at.file.clone(),
        pos: at.pos,
        done,
    };
    send(
        tx,
        stop,
        Chunk {
            records: Vec::new(),
            progress: progress(false),
        },
    )
    .await?;

    // The last row read is held back until the next one is known, so the
    // very last row of the snapshot can be marked `last`.
    let mut pending: Option<(String, String, Vec<String>, Row)> = None;
    let mut records: Vec<Record> = Vec::new();
    for (db, table) in &tables {
        let info = load_table_info(&mut meta, db, table).await?;
        topics
            .ensure(
                &paystream_core::envelope::change_topic(&settings.records.prefix, db, table),
                TopicKind::Change,
            )
            .await?;
        let mut after_key: Option<Vec<MyValue>> = None;
        loop {
            if stop.is_cancelled() {
                return Err(SnapshotError::Cancelled);
            }
            let (rows, last_key) =
                read_chunk(&mut conn, &info, settings.chunk_rows, after_key.as_deref())
                    .await
                    .map_err(|e| match e {
                        ChunkError::Mysql(e) => SnapshotError::Mysql(e),
                        ChunkError::Value(source) => SnapshotError::Value {
                            table: format!("{db}.{table}"),
                            source,
                        },
                    })?;
            let n = rows.len();
            for row in rows {
                if let Some((pdb, ptable, pkey, prow)) = pending.take() {
                    build(
                        settings,
                        &at,
                        started_ms,
                        (&pdb, &ptable, &pkey),
                        prow,
                        SnapshotMarker::True,
                        &mut records,
                    )?;
                }
                pending = Some((db.clone(), table.clone(), info.primary_key.clone(), row));
            }
            metrics.snapshot_rows.inc_by(n as u64);
            if records.len() >= settings.chunk_rows {
                let chunk = Chunk {
                    records: std::mem::take(&mut records),
                    progress: progress(false),
                };
                send(tx, stop, chunk).await?;
            }
            // Without a primary key the table was read in one pass.
            if n < settings.chunk_rows || info.primary_key.is_empty() {
                break;
            }
            after_key = last_key;
        }
    }
    if let Some((pdb, ptable, pkey, prow)) = pending.take() {
        build(
            settings,
            &at,
            started_ms,
            (&pdb, &ptable, &pkey),
            prow,
            SnapshotMarker::Last,
            &mut records,
        )?;
    }
    conn.query_drop("COMMIT").await?;
    send(
        tx,
        stop,
        Chunk {
            records,
            progress: progress(true),
        },
    )
    .await?;
    tracing::info!(
        tables = tables.len(),
        "snapshot read; streaming starts at its position"
    );
    Ok(at)
}

async fn send(
    tx: &mpsc::Sender<Chunk>,
    stop: &CancellationToken,
    chunk: Chunk,
) -> Result<(), SnapshotError> {
    tokio::select! {
        r = tx.send(chunk) => r.map_err(|_| SnapshotError::PublisherGone),
        _ = stop.cancelled() => Err(SnapshotError::Cancelled),
    }
}

fn build(
    settings: &SnapshotSettings,
    at: &SnapshotPosition,
    started_ms: i64,
    (db, table, key): (&str, &str, &[String]),
    row: Row,
    marker: SnapshotMarker,
    out: &mut Vec<Record>,
) -> Result<(), SnapshotError> {
    let change = RowChange {
        db,
        table,
        key_columns: key,
        kind: ChangeKind::SnapshotRead,
        before: None,
        after: Some(row),
        coords: Coordinates {
            server_id: 0,
            gtid: None,
            file: at.file.clone(),
            pos: at.pos,
            row: 0,
            ts_ms: started_ms,
            snapshot: marker,
        },
    };
    settings.records.build(change, started_ms, out)?;
    Ok(())
}

async fn snapshot_position(conn: &mut Conn) -> Result<SnapshotPosition, SnapshotError> {
    let rows: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let get = |name: &str| {
        rows.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let file = get("binlog_snapshot_file")
        .filter(|f| !f.is_empty())
        .ok_or(SnapshotError::NoPosition)?;
    let pos: u64 = get("binlog_snapshot_position")
        .and_then(|p| p.parse().ok())
        .ok_or(SnapshotError::NoPosition)?;
    let gtid: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file.clone(), pos))
        .await?;
    Ok(SnapshotPosition {
        gtid: gtid.flatten().unwrap_or_default(),
        file,
        pos,
    })
}

async fn captured_tables(
    conn: &mut Conn,
    filter: &TableFilter,
) -> Result<Vec<(String, String)>, SnapshotError> {
    let all: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY TABLE_SCHEMA, TABLE_NAME",
        )
        .await?;
    Ok(all
        .into_iter()
        .filter(|(d, t)| filter.captures(d, t))
        .collect())
}

enum ChunkError {
    Mysql(mysql_async::Error),
    Value(crate::snapshot_values::SnapshotValueError),
}

/// Reads up to `limit` rows after `after_key` in primary-key order. Returns
/// the rows and the key of the last one. Identifiers come from
/// `information_schema` and are quoted; values are bound parameters.
async fn read_chunk(
    conn: &mut Conn,
    info: &TableInfo,
    limit: usize,
    after_key: Option<&[MyValue]>,
) -> Result<(Vec<Row>, Option<Vec<MyValue>>), ChunkError> {
    let quote = |s: &str| format!("`{}`", s.replace('`', "``"));
    let cols: Vec<String> = info.columns.iter().map(|c| quote(&c.name)).collect();
    let key: Vec<String> = info.primary_key.iter().map(|k| quote(k)).collect();
    let mut sql = format!(
        "SELECT {} FROM {}.{}",
        cols.join(", "),
        quote(&info.db),
        quote(&info.table)
    );
    let mut params: Vec<MyValue> = Vec::new();
    if !key.is_empty() {
        if let Some(after) = after_key {
            let marks = vec!["?"; key.len()].join(", ");
            sql.push_str(&format!(" WHERE ({}) > ({marks})", key.join(", ")));
            params.extend(after.iter().cloned());
        }
        sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", key.join(", ")));
    }
    let result: Vec<mysql_async::Row> = conn.exec(sql, params).await.map_err(ChunkError::Mysql)?;
    let key_idx: Vec<usize> = info
        .primary_key
        .iter()
        .filter_map(|k| info.columns.iter().position(|c| &c.name == k))
        .collect();
    let mut last_key = None;
    let mut rows = Vec::with_capacity(result.len());
    for r in result {
        let columns = r.columns();
        // No value was taken from the row, so every slot is present.
        let values: Vec<MyValue> = r
            .unwrap_raw()
            .into_iter()
            .map(|v| v.unwrap_or(MyValue::NULL))
            .collect();
        last_key = Some(
            key_idx
                .iter()
                .map(|&i| values.get(i).cloned().unwrap_or(MyValue::NULL))
                .collect(),
        );
        rows.push(row_to_json(&columns, values, info).map_err(ChunkError::Value)?);
    }
    Ok((rows, last_key))
}
