//! MariaDB's own binlog events, and event checks `mysql_common` leaves to us.
//!
//! `mysql_common` knows MySQL's event types only, so MariaDB's GTID event
//! (type 162) and GTID_LIST event (type 163) reach us as raw events:
//! `Event::read_data()` returns `Ok(None)` for them and `Event::data()` holds
//! the body, with the 19-byte common header and the 4-byte CRC32 footer
//! already cut off (checked against MariaDB 10.11: a GTID event is 42 bytes
//! on the wire and `data()` is 19 of them). This module decodes those bodies
//! ([`decode_gtid_event`], [`decode_gtid_list`]). It also verifies event
//! checksums ([`verify_checksum`]): neither `mysql_common`'s
//! `EventStreamReader` nor `mysql_async`'s `BinlogStream` does — they ask the
//! server for checksums (`SET @master_binlog_checksum`), strip the footer and
//! store it in `Event::checksum()`, but never compare it. Finally,
//! [`rotate_file_name`] reads the first, artificial ROTATE event correctly:
//! it arrives before the FORMAT_DESCRIPTION event, so `mysql_common` does not
//! yet know checksums are on and leaves the CRC32 glued to the file name.

use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::binlog::EventType;
use mysql_async::binlog::events::Event;

use crate::gtid::MariaGtid;

/// MariaDB ANNOTATE_ROWS event: the SQL text of the following row events.
pub const ANNOTATE_ROWS_EVENT: u8 = 0xA0;
/// MariaDB BINLOG_CHECKPOINT event: crash-recovery bookkeeping.
pub const BINLOG_CHECKPOINT_EVENT: u8 = 0xA1;
/// MariaDB GTID event: starts an event group (replaces `BEGIN`).
pub const GTID_EVENT: u8 = 0xA2;
/// MariaDB GTID_LIST event: the binlog state at the start of a file.
pub const GTID_LIST_EVENT: u8 = 0xA3;
/// MariaDB START_ENCRYPTION event: the rest of the file is encrypted.
pub const START_ENCRYPTION_EVENT: u8 = 0xA4;

/// True for the events a server sends as soon as a binlog dump starts,
/// before it has found the requested position: the (fake) rotate, the
/// format description, the GTID list and the binlog checkpoint. Receiving
/// only these proves nothing about the connection's health (a server still
/// scanning for a GTID sends them, then may drop the connection). Pure.
pub fn is_preamble(event_type: u8) -> bool {
    event_type == EventType::ROTATE_EVENT as u8
        || event_type == EventType::FORMAT_DESCRIPTION_EVENT as u8
        || event_type == GTID_LIST_EVENT
        || event_type == BINLOG_CHECKPOINT_EVENT
}

/// `flags2`: the group has no terminating COMMIT/XID event (e.g. DDL).
pub const FL_STANDALONE: u8 = 0x01;
/// `flags2`: a group-commit id follows the flags.
pub const FL_GROUP_COMMIT_ID: u8 = 0x02;
/// `flags2`: the group can be rolled back safely (transactional engines).
pub const FL_TRANSACTIONAL: u8 = 0x04;
/// `flags2`: a parallel replica may run the group in parallel.
pub const FL_ALLOW_PARALLEL: u8 = 0x08;
/// `flags2`: the transaction waited on a row lock on the primary.
pub const FL_WAITED: u8 = 0x10;
/// `flags2`: the group contains DDL.
pub const FL_DDL: u8 = 0x20;
/// `flags2`: an `XA PREPARE` group; an XID follows.
pub const FL_PREPARED_XA: u8 = 0x40;
/// `flags2`: an `XA COMMIT`/`XA ROLLBACK` group; an XID follows.
pub const FL_COMPLETED_XA: u8 = 0x80;

/// `flags_extra`: the transaction spans more engines; a count follows.
pub const FL_EXTRA_MULTI_ENGINE: u8 = 0x01;
/// `flags_extra`: the first half of a two-phase `ALTER` (10.8+).
pub const FL_START_ALTER: u8 = 0x02;
/// `flags_extra`: commits a two-phase `ALTER`; its start sequence follows.
pub const FL_COMMIT_ALTER: u8 = 0x04;
/// `flags_extra`: rolls back a two-phase `ALTER`; its start sequence follows.
pub const FL_ROLLBACK_ALTER: u8 = 0x08;

/// A MariaDB event body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MariaEventError {
    /// The body ends before a field it must contain.
    #[error(
        "truncated MariaDB {event} event: {needed} bytes needed at offset {offset}, {len} present"
    )]
    Truncated {
        /// Event name.
        event: &'static str,
        /// Offset of the field that did not fit.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Length of the body.
        len: usize,
    },
    /// The event is not of the type the function decodes.
    #[error("expected event type {expected}, got {got}")]
    WrongType {
        /// Expected type code.
        expected: u8,
        /// Actual type code.
        got: u8,
    },
    /// A ROTATE event is shorter than its 8-byte position.
    #[error("ROTATE event body of {0} bytes is too short")]
    ShortRotate(usize),
}

/// An XA transaction id carried by XA groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XaXid {
    /// `formatID`.
    pub format_id: u32,
    /// Global transaction id part.
    pub gtrid: Vec<u8>,
    /// Branch qualifier part.
    pub bqual: Vec<u8>,
}

/// A decoded MariaDB GTID event: the start of one event group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MariaGtidEvent {
    /// The group's GTID; `server_id` comes from the event header.
    pub gtid: MariaGtid,
    /// Raw `flags2` byte (`FL_*` constants).
    pub flags: u8,
    /// No BEGIN/COMMIT around the group: it ends after its one statement
    /// (DDL, or DML on non-transactional tables).
    pub standalone: bool,
    /// The group is transactional (`FL_TRANSACTIONAL`).
    pub transactional: bool,
    /// The group is DDL (`FL_DDL`).
    pub ddl: bool,
    /// Group-commit id, when the group was committed together with others.
    pub commit_id: Option<u64>,
    /// XID of an `XA PREPARE` / `XA COMMIT` / `XA ROLLBACK` group.
    pub xid: Option<XaXid>,
    /// Raw `flags_extra` byte (`FL_EXTRA_*`, `FL_*_ALTER`), 0 when absent.
    pub flags_extra: u8,
    /// Sequence number of the `START ALTER` a `COMMIT/ROLLBACK ALTER` ends.
    pub start_alter_seq: Option<u64>,
}

/// A little-endian reader over an event body that reports truncation.
struct Body<'a> {
    event: &'static str,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MariaEventError> {
        let slice = self.data.get(self.pos..self.pos.saturating_add(n)).ok_or(
            MariaEventError::Truncated {
                event: self.event,
                offset: self.pos,
                needed: n,
                len: self.data.len(),
            },
        )?;
        self.pos += n;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, MariaEventError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, MariaEventError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, MariaEventError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }
}

/// Decodes a GTID event body (`Event::data()` of an event of type
/// [`GTID_EVENT`]); `server_id` is `Event::header().server_id()`.
///
/// Layout (MariaDB `Gtid_log_event`): seq_no u64, domain_id u32, flags2 u8;
/// commit_id u64 if `FL_GROUP_COMMIT_ID`; an XID (format u32, gtrid length
/// u8, bqual length u8, data) if an XA flag is set; then, if bytes remain,
/// `flags_extra` u8 with its optional fields. Without a commit id the body is
/// zero-padded to 19 bytes, so a zero `flags_extra` is read from the padding.
pub fn decode_gtid_event(server_id: u32, data: &[u8]) -> Result<MariaGtidEvent, MariaEventError> {
    let mut body = Body {
        event: "GTID",
        data,
        pos: 0,
    };
    let seq = body.u64()?;
    let domain = body.u32()?;
    let flags = body.u8()?;
    let commit_id = if flags & FL_GROUP_COMMIT_ID != 0 {
        Some(body.u64()?)
    } else {
        None
    };
    let xid = if flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0 {
        let format_id = body.u32()?;
        let gtrid_len = usize::from(body.u8()?);
        let bqual_len = usize::from(body.u8()?);
        Some(XaXid {
            format_id,
            gtrid: body.take(gtrid_len)?.to_vec(),
            bqual: body.take(bqual_len)?.to_vec(),
        })
    } else {
        None
    };
    let mut flags_extra = 0;
    let mut start_alter_seq = None;
    if body.remaining() > 0 {
        flags_extra = body.u8()?;
        if flags_extra & FL_EXTRA_MULTI_ENGINE != 0 {
            body.u8()?; // number of extra engines: not needed downstream
        }
        if flags_extra & (FL_COMMIT_ALTER | FL_ROLLBACK_ALTER) != 0 {
            start_alter_seq = Some(body.u64()?);
        }
        // Newer servers may append more optional fields (e.g. a thread id in
        // 11.5+); they are flagged in flags_extra and do not move the fields
        // above, so ignoring them is safe.
    }
    Ok(MariaGtidEvent {
        gtid: MariaGtid {
            domain,
            server_id,
            seq,
        },
        flags,
        standalone: flags & FL_STANDALONE != 0,
        transactional: flags & FL_TRANSACTIONAL != 0,
        ddl: flags & FL_DDL != 0,
        commit_id,
        xid,
        flags_extra,
        start_alter_seq,
    })
}

/// Decodes a GTID_LIST event body (`Event::data()` of an event of type
/// [`GTID_LIST_EVENT`]): the last GTID of every (domain, server) at the
/// start of a binlog file, in the order the server wrote them.
///
/// Layout: a u32 whose low 28 bits are the count (the high 4 bits are flags
/// of no use to a reader), then per GTID domain u32, server_id u32, seq u64.
pub fn decode_gtid_list(data: &[u8]) -> Result<Vec<MariaGtid>, MariaEventError> {
    let mut body = Body {
        event: "GTID_LIST",
        data,
        pos: 0,
    };
    let count = body.u32()? & 0x0FFF_FFFF;
    // Bounded by the body: a count larger than the data fails below.
    let mut gtids = Vec::with_capacity((count as usize).min(data.len() / 16));
    for _ in 0..count {
        let domain = body.u32()?;
        let server_id = body.u32()?;
        let seq = body.u64()?;
        gtids.push(MariaGtid {
            domain,
            server_id,
            seq,
        });
    }
    Ok(gtids)
}

/// Decodes `event` if it is a MariaDB GTID event; `Ok(None)` for any other
/// event type.
pub fn gtid_event_of(event: &Event) -> Result<Option<MariaGtidEvent>, MariaEventError> {
    let header = event.header();
    if header.event_type_raw() != GTID_EVENT {
        return Ok(None);
    }
    decode_gtid_event(header.server_id(), event.data()).map(Some)
}

/// Decodes `event` if it is a MariaDB GTID_LIST event; `Ok(None)` for any
/// other event type.
pub fn gtid_list_of(event: &Event) -> Result<Option<Vec<MariaGtid>>, MariaEventError> {
    if event.header().event_type_raw() != GTID_LIST_EVENT {
        return Ok(None);
    }
    decode_gtid_list(event.data()).map(Some)
}

/// What [`verify_checksum`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// The stored CRC32 matches the event.
    Verified,
    /// The event carries no checksum: checksums are off on the server, the
    /// event precedes the FORMAT_DESCRIPTION event (the artificial ROTATE),
    /// or it came out of a MySQL compressed transaction payload (whose
    /// inner events are not checksummed; the payload event itself is).
    NotChecksummed,
}

/// A binlog event's CRC32 does not match its bytes: the event is corrupt
/// and must not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "binlog event checksum mismatch: event type {event_type} at position {start_pos} \
     (end_log_pos {end_log_pos}): stored CRC32 {stored:#010x}, computed {computed:#010x}"
)]
pub struct ChecksumError {
    /// Raw event type.
    pub event_type: u8,
    /// Start position of the event in its binlog file (end minus size; 0
    /// for artificial events that have no position).
    pub start_pos: u64,
    /// `log_pos` from the event header: the position after the event.
    pub end_log_pos: u32,
    /// The checksum the server sent.
    pub stored: u32,
    /// The checksum of the bytes received.
    pub computed: u32,
}

/// Verifies an event's CRC32 footer against its header and body.
///
/// `mysql_common` 0.37 and `mysql_async` 0.37 never do this themselves:
/// `Event::read` strips the footer into `Event::checksum()` and moves on, so
/// a reader that wants corruption detected must call this for every event.
/// An algorithm other than CRC32 or OFF (none exists today) is treated as
/// [`ChecksumStatus::NotChecksummed`].
pub fn verify_checksum(event: &Event) -> Result<ChecksumStatus, ChecksumError> {
    let footer = event.footer();
    if !footer.get_checksum_enabled() {
        // Events from inside a compressed transaction payload: `checksum()`
        // would return zeros for them, not a checksum.
        return Ok(ChecksumStatus::NotChecksummed);
    }
    let is_fde = event.header().event_type_raw() == EventType::FORMAT_DESCRIPTION_EVENT as u8;
    let alg = match footer.get_checksum_alg() {
        Ok(Some(alg)) => alg,
        Ok(None) | Err(_) => return Ok(ChecksumStatus::NotChecksummed),
    };
    // A FORMAT_DESCRIPTION event is always checksummed with CRC32 when the
    // server is checksum-aware, whatever the algorithm it announces.
    if alg != BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32 && !is_fde {
        return Ok(ChecksumStatus::NotChecksummed);
    }
    let Some(stored) = event.checksum() else {
        return Ok(ChecksumStatus::NotChecksummed);
    };
    let stored = u32::from_le_bytes(stored);
    let computed = event.calc_checksum(alg);
    if stored == computed {
        Ok(ChecksumStatus::Verified)
    } else {
        let header = event.header();
        Err(ChecksumError {
            event_type: header.event_type_raw(),
            start_pos: u64::from(header.log_pos()).saturating_sub(u64::from(header.event_size())),
            end_log_pos: header.log_pos(),
            stored,
            computed,
        })
    }
}

/// The 19 header bytes of `event`, as they were on the wire.
fn header_bytes(event: &Event) -> [u8; 19] {
    let h = event.header();
    let mut out = [0u8; 19];
    out[0..4].copy_from_slice(&h.timestamp().to_le_bytes());
    out[4] = h.event_type_raw();
    out[5..9].copy_from_slice(&h.server_id().to_le_bytes());
    out[9..13].copy_from_slice(&h.event_size().to_le_bytes());
    out[13..17].copy_from_slice(&h.log_pos().to_le_bytes());
    out[17..19].copy_from_slice(&h.flags_raw().to_le_bytes());
    out
}

/// The binlog file name and position a ROTATE event points to.
///
/// Use this instead of `RotateEvent::name()`: the server sends an artificial
/// ROTATE first, before the FORMAT_DESCRIPTION event that announces
/// checksums, so `mysql_common` cannot strip its CRC32 and `name()` returns
/// the file name followed by 4 checksum bytes (`mariadb-bin.000001k\u{fffd}..`,
/// seen on MariaDB 10.11; mysql_async issue #189). When the last 4 bytes are
/// the CRC32 of the rest of the event they are dropped; a real file name
/// ending in 4 bytes that happen to be that CRC is a 1 in 2^32 event.
pub fn rotate_file_name(event: &Event) -> Result<(String, u64), MariaEventError> {
    let got = event.header().event_type_raw();
    if got != EventType::ROTATE_EVENT as u8 {
        return Err(MariaEventError::WrongType {
            expected: EventType::ROTATE_EVENT as u8,
            got,
        });
    }
    let data = event.data();
    if data.len() < 8 {
        return Err(MariaEventError::ShortRotate(data.len()));
    }
    let mut pos_bytes = [0u8; 8];
    pos_bytes.copy_from_slice(&data[..8]);
    let position = u64::from_le_bytes(pos_bytes);
    let mut name = &data[8..];
    if event.checksum().is_none() && name.len() >= 4 {
        let (body, crc) = data.split_at(data.len() - 4);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header_bytes(event));
        hasher.update(body);
        let mut stored = [0u8; 4];
        stored.copy_from_slice(crc);
        if hasher.finalize() == u32::from_le_bytes(stored) {
            name = &name[..name.len() - 4];
        }
    }
    Ok((String::from_utf8_lossy(name).into_owned(), position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::binlog::BinlogVersion;
    use mysql_async::binlog::events::FormatDescriptionEvent;

    #[test]
    fn only_the_dump_preamble_is_preamble() {
        for t in [
            EventType::ROTATE_EVENT as u8,
            EventType::FORMAT_DESCRIPTION_EVENT as u8,
            GTID_LIST_EVENT,
            BINLOG_CHECKPOINT_EVENT,
        ] {
            assert!(is_preamble(t), "{t:#x}");
        }
        for t in [
            GTID_EVENT,
            EventType::HEARTBEAT_EVENT as u8,
            EventType::TABLE_MAP_EVENT as u8,
            EventType::XID_EVENT as u8,
            EventType::QUERY_EVENT as u8,
        ] {
            assert!(!is_preamble(t), "{t:#x}");
        }
    }

    /// The body of the DDL GTID event in MariaDB's documentation
    /// (`GTID 0-10124-9883 ddl`), CRC stripped.
    const DOC_DDL_BODY: [u8; 19] = [
        0x9b, 0x26, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn decodes_a_standalone_ddl_gtid() {
        let ev = decode_gtid_event(10124, &DOC_DDL_BODY).unwrap();
        assert_eq!(ev.gtid.to_string(), "0-10124-9883");
        assert_eq!(ev.flags, 0x29);
        assert!(ev.standalone && ev.ddl && !ev.transactional);
        assert_eq!(ev.commit_id, None);
        assert_eq!(ev.xid, None);
        assert_eq!(ev.flags_extra, 0);
    }

    #[test]
    fn decodes_a_transaction_gtid_seen_on_mariadb_10_11() {
        // Raw `Event::data()` of a GTID event from the local server.
        let body = [
            0x21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0, 0,
        ];
        let ev = decode_gtid_event(1, &body).unwrap();
        assert_eq!(ev.gtid.to_string(), "0-1-33");
        assert!(!ev.standalone && ev.transactional && !ev.ddl);
    }

    #[test]
    fn decodes_group_commit_id_and_domain() {
        let mut body = Vec::new();
        body.extend_from_slice(&7u64.to_le_bytes());
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(FL_GROUP_COMMIT_ID | FL_TRANSACTIONAL);
        body.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        let ev = decode_gtid_event(2, &body).unwrap();
        assert_eq!(ev.gtid.to_string(), "3-2-7");
        assert_eq!(ev.commit_id, Some(0x0102_0304_0506_0708));
        assert!(!ev.standalone);
        // Truncated commit id.
        let err = decode_gtid_event(2, &body[..16]).unwrap_err();
        assert!(
            matches!(
                err,
                MariaEventError::Truncated {
                    offset: 13,
                    needed: 8,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn decodes_xa_xid_and_extra_flags() {
        let mut body = Vec::new();
        body.extend_from_slice(&9u64.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.push(FL_PREPARED_XA | FL_TRANSACTIONAL);
        body.extend_from_slice(&1u32.to_le_bytes());
        body.push(3);
        body.push(2);
        body.extend_from_slice(b"abcxy");
        body.push(FL_EXTRA_MULTI_ENGINE | FL_COMMIT_ALTER);
        body.push(2);
        body.extend_from_slice(&77u64.to_le_bytes());
        let ev = decode_gtid_event(1, &body).unwrap();
        let xid = ev.xid.unwrap();
        assert_eq!(
            (xid.format_id, &xid.gtrid[..], &xid.bqual[..]),
            (1, &b"abc"[..], &b"xy"[..])
        );
        assert_eq!(ev.flags_extra, FL_EXTRA_MULTI_ENGINE | FL_COMMIT_ALTER);
        assert_eq!(ev.start_alter_seq, Some(77));
    }

    #[test]
    fn rejects_short_gtid_bodies() {
        for len in 0..13 {
            assert!(decode_gtid_event(1, &DOC_DDL_BODY[..len]).is_err(), "{len}");
        }
        // 13 bytes (no padding) is still a valid GTID.
        assert_eq!(
            decode_gtid_event(1, &DOC_DDL_BODY[..13]).unwrap().gtid.seq,
            9883
        );
    }

    #[test]
    fn decodes_gtid_lists() {
        let mut body = Vec::new();
        body.extend_from_slice(&(2u32 | 0x1000_0000).to_le_bytes()); // a flag bit set
        for (d, s, q) in [(0u32, 1u32, 42u64), (1, 2, 7)] {
            body.extend_from_slice(&d.to_le_bytes());
            body.extend_from_slice(&s.to_le_bytes());
            body.extend_from_slice(&q.to_le_bytes());
        }
        let list = decode_gtid_list(&body).unwrap();
        let text: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["0-1-42", "1-2-7"]);
        assert_eq!(decode_gtid_list(&0u32.to_le_bytes()).unwrap(), vec![]);
        assert!(decode_gtid_list(&body[..body.len() - 1]).is_err());
        // A huge count with no data fails instead of allocating.
        assert!(decode_gtid_list(&0x0FFF_FFFFu32.to_le_bytes()).is_err());
    }

    /// Builds an event from raw bytes the way the stream reader does.
    fn event(
        fde: &FormatDescriptionEvent<'_>,
        ty: u8,
        body: &[u8],
        log_pos: u32,
        crc: bool,
    ) -> Event {
        let size = 19 + body.len() + if crc { 4 } else { 0 };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        bytes.push(ty);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(size as u32).to_le_bytes());
        bytes.extend_from_slice(&log_pos.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(body);
        if crc {
            let c = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&c.to_le_bytes());
        }
        Event::read(fde, &bytes[..]).unwrap()
    }

    fn crc_fde() -> FormatDescriptionEvent<'static> {
        FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
            mysql_async::binlog::events::BinlogEventFooter::new(
                BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32,
            ),
        )
    }

    #[test]
    fn verifies_and_rejects_checksums() {
        let fde = crc_fde();
        let ev = event(&fde, GTID_EVENT, &DOC_DDL_BODY, 1000, true);
        assert_eq!(
            ev.data(),
            &DOC_DDL_BODY,
            "data() excludes header and footer"
        );
        assert_eq!(verify_checksum(&ev), Ok(ChecksumStatus::Verified));
        assert_eq!(
            gtid_event_of(&ev).unwrap().unwrap().gtid.to_string(),
            "0-1-9883"
        );
        assert_eq!(gtid_list_of(&ev).unwrap(), None);

        let mut corrupt = DOC_DDL_BODY;
        corrupt[0] ^= 1;
        let good = event(&fde, GTID_EVENT, &DOC_DDL_BODY, 1000, true);
        // Rebuild with the good CRC but a flipped body byte.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        bytes.push(GTID_EVENT);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&42u32.to_le_bytes());
        bytes.extend_from_slice(&1000u32.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&corrupt);
        bytes.extend_from_slice(&good.checksum().unwrap());
        let bad = Event::read(&fde, &bytes[..]).unwrap();
        let err = verify_checksum(&bad).unwrap_err();
        assert_eq!(err.start_pos, 958);
        assert_eq!(err.end_log_pos, 1000);
        assert!(err.to_string().contains("position 958"), "{err}");
    }

    #[test]
    fn events_without_checksums_are_reported_as_such() {
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        let ev = event(&fde, GTID_EVENT, &DOC_DDL_BODY, 1000, false);
        assert_eq!(verify_checksum(&ev), Ok(ChecksumStatus::NotChecksummed));
    }

    #[test]
    fn rotate_name_drops_a_glued_crc() {
        // Before the FDE the reader does not know about checksums.
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4);
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend_from_slice(b"mariadb-bin.000001");
        let glued = event(&fde, EventType::ROTATE_EVENT as u8, &body, 0, true);
        assert_eq!(
            glued.data().len(),
            body.len() + 4,
            "the CRC stays in data()"
        );
        assert_eq!(
            rotate_file_name(&glued).unwrap(),
            ("mariadb-bin.000001".to_string(), 4)
        );
        let plain = event(&fde, EventType::ROTATE_EVENT as u8, &body, 0, false);
        assert_eq!(rotate_file_name(&plain).unwrap().0, "mariadb-bin.000001");
        let stripped = event(&crc_fde(), EventType::ROTATE_EVENT as u8, &body, 0, true);
        assert_eq!(rotate_file_name(&stripped).unwrap().0, "mariadb-bin.000001");
        let not_rotate = event(&fde, GTID_EVENT, &DOC_DDL_BODY, 0, false);
        assert!(matches!(
            rotate_file_name(&not_rotate),
            Err(MariaEventError::WrongType { .. })
        ));
        let short = event(&fde, EventType::ROTATE_EVENT as u8, &[1, 2], 0, false);
        assert_eq!(
            rotate_file_name(&short),
            Err(MariaEventError::ShortRotate(2))
        );
    }
}
