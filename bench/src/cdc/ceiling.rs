//! The ceiling of the CDC benchmark: how fast MariaDB's own client,
//! `mariadb-binlog --read-from-remote-server`, reads the backlog's binlog range
//! from the server as a replica would, with no engine running. Two reads:
//! *raw* (`--raw`, the events copied to a file untouched, from the backlog's
//! start position to the end of the binlog) is the transfer ceiling in bytes
//! and rows per second; *decoded* (`--base64-output=decode-rows --verbose`,
//! from the GTID before the backlog to its last GTID) also turns every row
//! into text, and its `### INSERT INTO` lines count the rows. It reads as the
//! `paystream_cdc` user (replication rights), like paystream.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use paystream_testkit::Stack;
use serde_json::{Value, json};

use super::Backlog;

/// What the ceiling is, for reports.
pub(super) const DESCRIPTION: &str = "mariadb-binlog --read-from-remote-server over the backlog's binlog range: raw (--raw) and decoded (--base64-output=decode-rows --verbose)";

fn binlog_tool() -> &'static str {
    for tool in ["mariadb-binlog", "mysqlbinlog"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return tool;
        }
    }
    "mariadb-binlog"
}

fn base(stack: &Stack, tool: &str) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args([
        "--read-from-remote-server",
        "--host=127.0.0.1",
        &format!("--port={}", stack.mysql_port),
        &format!("--user={}", stack.cdc.user),
    ])
    .env("MYSQL_PWD", &stack.cdc.password);
    cmd
}

/// Counts row lines (`### INSERT INTO`, `### UPDATE`, `### DELETE FROM`) and
/// bytes in `mariadb-binlog --verbose` output.
fn count_rows(out: impl Read) -> std::io::Result<(u64, u64)> {
    let mut r = BufReader::with_capacity(1 << 20, out);
    let mut line = Vec::with_capacity(256);
    let (mut rows, mut bytes) = (0u64, 0u64);
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok((rows, bytes));
        }
        bytes += n as u64;
        if line.starts_with(b"### INSERT INTO")
            || line.starts_with(b"### UPDATE ")
            || line.starts_with(b"### DELETE FROM")
        {
            rows += 1;
        }
    }
}

/// Reads the backlog's binlog range twice (raw, decoded) and reports rates.
pub(super) fn measure(stack: &Stack, backlog: &Backlog, db: &str) -> anyhow::Result<Value> {
    let tool = binlog_tool();
    let rows = backlog.rows as f64;

    // Raw: events as they are, into a scratch folder that is removed after.
    let dir = paystream_testkit::repo_root().join(format!("var/test-logs/bench-ceiling-{db}"));
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    let out = base(stack, tool)
        .args([
            "--raw",
            "--to-last-log",
            &format!("--start-position={}", backlog.start_pos),
            &format!("--result-file={}/", dir.display()),
            &backlog.start_file,
        ])
        .output()
        .with_context(|| format!("running {tool}"))?;
    let raw_secs = t.elapsed().as_secs_f64();
    let mut raw_bytes = 0;
    for e in std::fs::read_dir(&dir)? {
        raw_bytes += e?.metadata()?.len();
    }
    std::fs::remove_dir_all(&dir)?;
    if !out.status.success() {
        bail!(
            "{tool} --raw failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    // Decoded: every row event turned into text, counted here.
    let t = Instant::now();
    let mut child = base(stack, tool)
        .args([
            "--to-last-log",
            "--base64-output=decode-rows",
            "--verbose",
            &format!("--start-position={}", backlog.start_gtid),
            &format!("--stop-position={}", backlog.last_gtid),
            &backlog.start_file,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (decoded_rows, text_bytes) = count_rows(stdout)?;
    let status = child.wait()?;
    let decoded_secs = t.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("{tool} (decoded) failed ({status}): {}", err.trim());
    }

    Ok(json!({
        "tool": tool,
        "binlog_bytes": backlog.binlog_bytes,
        "raw": {
            "seconds": raw_secs, "bytes": raw_bytes,
            "mib_per_second": raw_bytes as f64 / 1048576.0 / raw_secs,
            "rows_per_second": rows / raw_secs,
        },
        "decoded": {
            "seconds": decoded_secs, "rows": decoded_rows, "text_bytes": text_bytes,
            "rows_per_second": decoded_rows as f64 / decoded_secs,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_row_lines_of_verbose_output() {
        let text = b"# at 4\n### INSERT INTO `db`.`purchases`\n### SET\n###   @1=1\n\
                     ### UPDATE `db`.`t`\n### DELETE FROM `db`.`t`\n#### INSERT INTO not a row\n";
        let (rows, bytes) = count_rows(&text[..]).unwrap();
        assert_eq!(rows, 3);
        assert_eq!(bytes, text.len() as u64);
    }
}
