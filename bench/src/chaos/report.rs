//! The chaos run's outputs, all pure: the record of a run ([`Run`], written
//! as JSON), the totals and the reasons the run failed, the Markdown page,
//! the SVG timeline (time on x; committed rows/s and API 5xx per second;
//! each fault a band from its start to its heal, and a lighter one from the
//! heal to the probe being visible, labelled with the recovery time) and the
//! one-line summary that ends stdout.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use super::timeline::{Bucket, sum};
use super::verify::{Chains, Verdicts};
use super::writer::Stats;

/// One fault as it happened. Times are seconds since the run's start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultRecord {
    /// Its kind.
    pub kind: String,
    /// When the schedule wanted it.
    pub planned_at: f64,
    /// When it began.
    pub start: f64,
    /// Seconds it was held.
    pub hold: f64,
    /// When it healed.
    pub heal: Option<f64>,
    /// When the probe became visible through the API.
    pub visible: Option<f64>,
    /// `visible - heal`.
    pub recovery_secs: Option<f64>,
    /// API 5xx from the start to the recovery (or the cap).
    pub five_xx: u64,
    /// API reads without an answer in that window.
    pub read_errors: u64,
    /// Wrong API answers in that window.
    pub wrong: u64,
    /// Failed writer transactions in that window.
    pub failed_txns: u64,
    /// Why it was not injected (never counted as passed).
    pub skipped: Option<String>,
    /// What went wrong healing it.
    pub error: Option<String>,
    /// Injected, but the probe did not come through within the cap.
    pub not_recovered: bool,
    /// The probe's purchase id.
    pub probe_id: Option<u64>,
    /// Seconds from the heal until the consumer's marks said the read model
    /// was complete again (after a data loss: the rebuild); not judged.
    pub model_complete_secs: Option<f64>,
}

impl FaultRecord {
    /// Fills the window counters from the timeline; the window runs from
    /// the start to the visible probe, or to `cap` seconds after the heal.
    pub fn count_window(&mut self, buckets: &[Bucket], cap: f64) {
        let end = self
            .visible
            .unwrap_or(self.heal.unwrap_or(self.start) + cap);
        let w = sum(buckets, self.start, end);
        self.five_xx = w.five_xx;
        self.read_errors = w.read_errors;
        self.wrong = w.wrong;
        self.failed_txns = w.failed_txns + w.unknown_commits;
    }
}

/// The final checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verified {
    /// The checker found Redis equal to MySQL.
    pub converged: bool,
    /// Seconds until it did (or gave up).
    pub converge_secs: f64,
    /// The checker's last report.
    pub checker: String,
    /// Purchase rows in MySQL at the end.
    pub mysql_purchases: usize,
    /// Purchase ids read through the API.
    pub api_ids: usize,
    /// Users whose lists were read through the API.
    pub api_users: usize,
    /// Redis documents against MySQL.
    pub redis: Verdicts,
    /// The API against MySQL.
    pub api: Verdicts,
    /// The purchases change topic.
    pub purchases_chain: Chains,
    /// The packages change topic.
    pub packages_chain: Chains,
}

/// The numbers the run is judged by.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Faults injected.
    pub faults: usize,
    /// Faults skipped.
    pub skipped: usize,
    /// Rows lost (see the docs).
    pub lost: usize,
    /// Rows stale.
    pub stale: usize,
    /// Repeated events.
    pub dups: usize,
    /// Wrong answers during the run plus wrong rows at the end.
    pub wrong: usize,
    /// Faults whose probe never came through.
    pub not_recovered: usize,
    /// Unusable API answers in the final check.
    pub api_errors: usize,
    /// Longest recovery.
    pub max_recovery: Option<f64>,
    /// The final checks ran.
    pub verified: bool,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    /// `chaos`.
    pub benchmark: String,
    /// When it ended (RFC 3339).
    pub date: String,
    /// The configuration, as given.
    pub config: serde_json::Value,
    /// Seconds from the first write to the end of the final checks.
    pub duration_secs: f64,
    /// Probe latency before any fault.
    pub baseline_secs: Option<f64>,
    /// The faults, in order.
    pub faults: Vec<FaultRecord>,
    /// The writers, summed.
    pub writer: Stats,
    /// Committed rows per second of writing.
    pub achieved_rate: f64,
    /// Whole-run API read counters.
    pub reads: Bucket,
    /// Wrong answers seen by the readers, described.
    pub wrong_examples: Vec<String>,
    /// The final checks, if they ran.
    pub verified: Option<Verified>,
    /// Per-second counters.
    pub timeline: Vec<Bucket>,
    /// The judged numbers.
    pub totals: Totals,
    /// Why the run failed (empty: it passed).
    pub failures: Vec<String>,
    /// The error that ended the run early, if any.
    pub error: Option<String>,
    /// Logs of the processes.
    pub logs: Vec<String>,
}

/// Computes the judged numbers of `run`.
pub fn totals(run: &Run) -> Totals {
    let injected: Vec<&FaultRecord> = run.faults.iter().filter(|f| f.skipped.is_none()).collect();
    let mut t = Totals {
        faults: injected.len(),
        skipped: run.faults.len() - injected.len(),
        not_recovered: injected.iter().filter(|f| f.not_recovered).count(),
        max_recovery: injected
            .iter()
            .filter_map(|f| f.recovery_secs)
            .reduce(f64::max),
        wrong: run.reads.wrong as usize,
        ..Totals::default()
    };
    if let Some(v) = &run.verified {
        t.verified = true;
        let mut lost: BTreeSet<u64> = &v.redis.lost | &v.api.lost;
        lost.extend(&v.purchases_chain.gaps);
        lost.extend(&v.purchases_chain.tail);
        let stale: BTreeSet<u64> = &(&v.redis.stale | &v.api.stale) - &lost;
        let packages_lost = (&v.packages_chain.gaps | &v.packages_chain.tail).len();
        t.lost = lost.len() + packages_lost;
        t.stale = stale.len();
        t.dups = v.purchases_chain.dups + v.packages_chain.dups;
        t.wrong += (&v.redis.wrong | &v.api.wrong).len() + v.api.misordered_lists;
        t.api_errors = v.api.errors;
    }
    t
}

/// Why a run with `t` failed; empty when it passed.
pub fn failures(t: &Totals, max_recovery_secs: Option<f64>, error: Option<&str>) -> Vec<String> {
    let mut f = Vec::new();
    if let Some(e) = error {
        f.push(format!("the run ended early: {e}"));
    }
    if !t.verified {
        f.push("the final checks did not run".into());
    }
    for (n, what) in [
        (t.lost, "rows lost"),
        (t.stale, "rows stale"),
        (t.dups, "duplicate events"),
        (t.wrong, "wrong answers"),
        (t.not_recovered, "faults not recovered"),
        (t.api_errors, "unusable API answers in the final check"),
    ] {
        if n > 0 {
            f.push(format!("{n} {what}"));
        }
    }
    if let (Some(cap), Some(max)) = (max_recovery_secs, t.max_recovery)
        && max > cap
    {
        f.push(format!(
            "max recovery {max:.1} s is above --max-recovery-secs {cap}"
        ));
    }
    f
}

/// The last line of stdout.
pub fn summary_line(t: &Totals) -> String {
    format!(
        "chaos: {} faults, {} lost, {} stale, {} duplicates, max recovery {:.1} s",
        t.faults,
        t.lost,
        t.stale,
        t.dups,
        t.max_recovery.unwrap_or(0.0)
    )
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.1}"))
}

fn fault_row(f: &FaultRecord) -> String {
    let outcome = match (&f.skipped, &f.error, f.not_recovered) {
        (Some(why), _, _) => format!("skipped: {why}"),
        (None, Some(e), _) => format!("heal failed: {e}"),
        (None, None, true) => "not recovered".to_string(),
        (None, None, false) => "recovered".to_string(),
    };
    format!(
        "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        f.kind,
        f.start,
        f.hold,
        opt(f.heal.map(|h| h - f.start)),
        opt(f.recovery_secs),
        opt(f.model_complete_secs),
        f.five_xx,
        f.read_errors,
        f.wrong,
        f.failed_txns,
        outcome
    )
}

fn verdicts_md(md: &mut String, what: &str, v: &Verdicts) {
    let _ = writeln!(
        md,
        "| {what} | {} | {} | {} | {} | {} |",
        v.lost.len(),
        v.stale.len(),
        v.wrong.len(),
        v.errors,
        v.misordered_lists
    );
}

fn chains_md(md: &mut String, what: &str, c: &Chains) {
    let _ = writeln!(
        md,
        "| {what} | {} | {} | {} | {} | {} |",
        c.keys,
        c.events,
        c.dups,
        c.gaps.len(),
        c.tail.len()
    );
}

fn verified_md(md: &mut String, v: &Verified) {
    let _ = write!(
        md,
        "\n## Final checks\n\nThe checker ({}) {} after {:.1} s. {} purchases in MySQL; {} ids and {} users' lists read through the API.\n\n\
         | where | lost | stale | wrong | unusable answers | misordered lists |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
        v.checker.lines().next().unwrap_or(""),
        if v.converged {
            "converged"
        } else {
            "did NOT converge"
        },
        v.converge_secs,
        v.mysql_purchases,
        v.api_ids,
        v.api_users
    );
    verdicts_md(md, "Redis", &v.redis);
    verdicts_md(md, "API", &v.api);
    md.push_str("\n| change topic | keys | events | repeated | gaps | wrong last state |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
    chains_md(md, "purchases", &v.purchases_chain);
    chains_md(md, "packages", &v.packages_chain);
    let examples: Vec<&String> = v
        .redis
        .examples
        .iter()
        .chain(&v.api.examples)
        .chain(&v.purchases_chain.examples)
        .chain(&v.packages_chain.examples)
        .take(20)
        .collect();
    if !examples.is_empty() {
        md.push_str("\nFirst problems:\n\n");
        for e in examples {
            let _ = writeln!(md, "- {e}");
        }
    }
}

/// The Markdown page; `svg` is the timeline's file name next to it.
pub fn markdown(run: &Run, svg: &str) -> String {
    let t = &run.totals;
    let mut md = format!(
        "# Chaos run, {}\n\n`paystream-bench chaos` with {}.\n\n**{}** — {}.\n\n![timeline]({svg})\n\n",
        run.date,
        run.config,
        summary_line(t),
        if run.failures.is_empty() {
            "passed".to_string()
        } else {
            format!("FAILED: {}", run.failures.join("; "))
        },
    );
    let _ = write!(
        md,
        "Writing: {} transactions committed ({} rows, {:.0} rows/s), {} rolled back on purpose, {} failed, \
         {} refused because the API had just taken an id the run chose, {} commits with unknown outcome ({} committed, {} not, {} unresolved); first error: {}.\n\
         API reads: {} answered, {} 5xx, {} without answer; API writes: {} ok, {} failed. \
         Probe before any fault: {} s.\n\n",
        run.writer.committed,
        run.writer.rows,
        run.achieved_rate,
        run.writer.rolled_back,
        run.writer.failed,
        run.writer.id_conflicts,
        run.writer.unknown,
        run.writer.unknown_committed,
        run.writer.unknown_aborted,
        run.writer.unresolved,
        run.writer.first_error.as_deref().unwrap_or("none"),
        run.reads.reads,
        run.reads.five_xx,
        run.reads.read_errors,
        run.reads.api_writes,
        run.reads.api_write_failures,
        opt(run.baseline_secs),
    );
    md.push_str(
        "| fault | start s | held s | heal s | recovery s | model complete s | 5xx | no answer | wrong | failed txns | outcome |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for f in &run.faults {
        md.push_str(&fault_row(f));
    }
    if let Some(v) = &run.verified {
        verified_md(&mut md, v);
    }
    if !run.wrong_examples.is_empty() {
        md.push_str("\nWrong answers during the run:\n\n");
        for w in &run.wrong_examples {
            let _ = writeln!(md, "- {w}");
        }
    }
    md.push_str(
        "\nHow to read it: times are seconds since writing started. \"heal\" is how long the fault lasted \
         (until the process was started again, the server answered, or the connection or broker was resumed); \
         \"recovery\" runs from the heal to the first API answer for a purchase inserted into MariaDB right \
         after the heal, read once the consumer had written it to Redis. \"model complete\" runs from the heal until the \
         consumer's marks said every partition was live again (after a Redis data loss: the end of the rebuild; \
         reported, not judged). 5xx, reads without answer, wrong \
         answers and failed transactions are counted from the fault's start to its recovery. See docs/chaos.md.\n",
    );
    md
}

// ---- The SVG timeline ------------------------------------------------------------------

const W: f64 = 1000.0;
const H: f64 = 440.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 30.0;
const PLOT_H: f64 = 300.0;

fn nice_step(span: f64) -> f64 {
    let raw = (span / 8.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Where the plot ends: the last second of writing, or the last fault's
/// recovery (or cap) if later.
fn plot_end(run: &Run, cap: f64) -> f64 {
    run.faults
        .iter()
        .filter(|f| f.skipped.is_none())
        .map(|f| {
            f.visible
                .unwrap_or(f.heal.unwrap_or(f.start + f.hold) + cap)
        })
        .fold(run.timeline.len() as f64, f64::max)
        .max(1.0)
}

fn fault_band(s: &mut String, f: &FaultRecord, cap: f64, x: &dyn Fn(f64) -> f64) {
    let heal = f.heal.unwrap_or(f.start + f.hold);
    let until = f.visible.unwrap_or(heal + cap);
    let color = if f.not_recovered || f.error.is_some() {
        "#d6604d"
    } else {
        "#fddbc7"
    };
    let _ = writeln!(
        s,
        "<rect x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{PLOT_H}\" fill=\"#b2182b\" fill-opacity=\"0.35\"/>\n\
         <rect x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{PLOT_H}\" fill=\"{color}\" fill-opacity=\"0.6\"/>\n\
         <text transform=\"translate({:.1},{:.1}) rotate(-90)\" fill=\"#67001f\">{} {}</text>",
        x(f.start),
        (x(heal) - x(f.start)).max(1.0),
        x(heal),
        (x(until) - x(heal)).max(1.0),
        x(f.start) + 10.0,
        TOP + PLOT_H - 4.0,
        xml(&f.kind),
        f.recovery_secs
            .map_or_else(|| "not recovered".to_string(), |r| format!("{r:.1} s")),
    );
}

/// The timeline as an SVG document.
pub fn svg(run: &Run, cap: f64) -> String {
    let b = &run.timeline;
    let end = plot_end(run, cap);
    let pw = W - LEFT - RIGHT;
    let x = |t: f64| LEFT + t.clamp(0.0, end) / end * pw;
    let max_rows = b.iter().map(|x| x.rows).max().unwrap_or(0).max(1) as f64;
    let max_bad = b
        .iter()
        .map(|x| x.five_xx + x.read_errors)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let y_rows = |v: f64| TOP + PLOT_H - v / max_rows * PLOT_H;
    let y_bad = |v: f64| TOP + PLOT_H - v / max_bad * PLOT_H;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"18\" font-size=\"13\">{}</text>\n",
        xml(&summary_line(&run.totals))
    );
    for f in run.faults.iter().filter(|f| f.skipped.is_none()) {
        fault_band(&mut s, f, cap, &x);
    }
    // Reads without an answer (orange) with the 5xx (red) at their foot.
    for (i, v) in b.iter().enumerate() {
        let t = i as f64;
        let w = (x(t + 1.0) - x(t)).max(1.0);
        for (n, color) in [
            (v.five_xx + v.read_errors, "#fdae61"),
            (v.five_xx, "#d7191c"),
        ] {
            if n > 0 {
                let y = y_bad(n as f64);
                let _ = writeln!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
                    x(t),
                    TOP + PLOT_H - y
                );
            }
        }
    }
    let points: Vec<String> = b
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), y_rows(v.rows as f64)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#2166ac\" stroke-width=\"1.5\" points=\"{}\"/>",
        points.join(" ")
    );
    axes(&mut s, end, max_rows, max_bad, &x);
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, end: f64, max_rows: f64, max_bad: f64, x: &dyn Fn(f64) -> f64) {
    let bottom = TOP + PLOT_H;
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"#2166ac\"/>\n\
         <line x1=\"{}\" y1=\"{TOP}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#d7191c\"/>",
        W - RIGHT,
        W - RIGHT,
        W - RIGHT
    );
    let step = nice_step(end);
    let mut t = 0.0;
    while t <= end {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.0}</text>",
            x(t),
            bottom + 15.0
        );
        t += step;
    }
    for k in 0..=2 {
        let f = k as f64 / 2.0;
        let y = bottom - f * PLOT_H;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\" fill=\"#2166ac\">{:.0}</text>",
            LEFT - 4.0,
            f * max_rows
        );
        if k != 1 {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{y:.1}\" fill=\"#d7191c\">{:.0}</text>",
                W - RIGHT + 4.0,
                f * max_bad
            );
        }
    }
    let legend = bottom + 52.0;
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since writing started</text>\n\
         <text x=\"{LEFT}\" y=\"{legend}\" fill=\"#2166ac\">— committed rows/s (left axis)</text>\n\
         <text x=\"{:.1}\" y=\"{legend}\" fill=\"#d7191c\">▮ API 5xx/s</text>\n\
         <text x=\"{:.1}\" y=\"{legend}\" fill=\"#f08a24\">▮ API reads without answer/s (right axis)</text>\n\
         <text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#67001f\">dark band: fault until healed; light band: heal until the probe was visible (label: recovery)</text>",
        LEFT + (W - LEFT - RIGHT) / 2.0,
        bottom + 32.0,
        LEFT + 200.0,
        LEFT + 290.0,
        legend + 20.0,
    );
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: &str, recovery: Option<f64>) -> FaultRecord {
        FaultRecord {
            kind: kind.into(),
            start: 10.0,
            hold: 2.0,
            heal: Some(12.0),
            visible: recovery.map(|r| 12.0 + r),
            recovery_secs: recovery,
            not_recovered: recovery.is_none(),
            ..FaultRecord::default()
        }
    }

    fn run() -> Run {
        let mut v = Verified::default();
        v.redis.lost.insert(4);
        v.api.lost.insert(4);
        v.api.stale.insert(4);
        v.api.stale.insert(5);
        v.purchases_chain.gaps.insert(6);
        v.purchases_chain.dups = 2;
        Run {
            faults: vec![
                fault("api-kill", Some(3.25)),
                fault("kafka-kill", Some(51.0)),
                FaultRecord {
                    skipped: Some("no pidfile".into()),
                    ..fault("mariadb-kill", None)
                },
            ],
            verified: Some(v),
            timeline: (0..60)
                .map(|i| Bucket {
                    rows: 900 + i,
                    five_xx: u64::from(i == 11),
                    ..Bucket::default()
                })
                .collect(),
            duration_secs: 60.0,
            ..Run::default()
        }
    }

    #[test]
    fn totals_and_the_summary_line() {
        let mut r = run();
        r.reads.wrong = 1;
        let t = totals(&r);
        assert_eq!(
            (t.faults, t.skipped, t.lost, t.stale, t.dups, t.wrong),
            (2, 1, 2, 1, 2, 1)
        );
        assert_eq!(t.max_recovery, Some(51.0));
        assert_eq!(
            summary_line(&t),
            "chaos: 2 faults, 2 lost, 1 stale, 2 duplicates, max recovery 51.0 s"
        );
        assert_eq!(
            summary_line(&Totals::default()),
            "chaos: 0 faults, 0 lost, 0 stale, 0 duplicates, max recovery 0.0 s"
        );
    }

    #[test]
    fn failures_name_every_reason() {
        let clean = Totals {
            faults: 3,
            verified: true,
            max_recovery: Some(40.0),
            ..Totals::default()
        };
        assert!(failures(&clean, None, None).is_empty());
        assert!(failures(&clean, Some(50.0), None).is_empty());
        assert_eq!(failures(&clean, Some(30.0), None).len(), 1);
        let bad = Totals {
            lost: 1,
            dups: 2,
            not_recovered: 1,
            ..clean.clone()
        };
        let f = failures(&bad, None, Some("boom"));
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(!failures(&Totals::default(), None, None).is_empty());
    }

    #[test]
    fn windows_count_from_the_start_to_the_recovery() {
        let b: Vec<Bucket> = (0..100)
            .map(|_| Bucket {
                five_xx: 1,
                failed_txns: 1,
                ..Bucket::default()
            })
            .collect();
        let mut f = fault("x", Some(3.0));
        f.count_window(&b, 120.0);
        assert_eq!(f.five_xx, 5);
        let mut g = fault("y", None);
        g.count_window(&b, 20.0);
        assert_eq!(g.five_xx, 22);
        assert_eq!(g.failed_txns, 22);
    }

    #[test]
    fn the_page_and_the_plot_show_every_fault() {
        let mut r = run();
        r.totals = totals(&r);
        r.failures = failures(&r.totals, None, None);
        let md = markdown(&r, "chaos-x.svg");
        assert!(
            md.contains("| api-kill | 10.0 | 2.0 | 2.0 | 3.2 |")
                || md.contains("| api-kill | 10.0 | 2.0 | 2.0 | 3.3 |"),
            "{md}"
        );
        assert!(md.contains("skipped: no pidfile"));
        assert!(md.contains("FAILED"));
        assert!(md.contains("![timeline](chaos-x.svg)"));
        let s = svg(&r, 120.0);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("kafka-kill 51.0 s"));
        assert!(!s.contains("mariadb-kill"));
        assert_eq!(s.matches("fill=\"#b2182b\"").count(), 2);
        assert_eq!(s.matches("fill=\"#d7191c\"/>").count(), 1);
        assert_eq!(s.matches("fill=\"#fdae61\"/>").count(), 1);
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(nice_step(600.0), 100.0);
        assert_eq!(nice_step(150.0), 20.0);
        assert_eq!(nice_step(5.0), 1.0);
        assert_eq!(xml("a<b>&\""), "a&lt;b&gt;&amp;&quot;");
    }
}
