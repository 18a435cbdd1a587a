//! Writing results: a JSON file for machines and a Markdown page for people,
//! both under `bench/results/`, named by date and benchmark; and the two
//! statistics every benchmark shares (percentiles of samples, medians of
//! repetitions).

use std::path::PathBuf;

/// Percentile of an ascending-sorted slice (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of unsorted values (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Writes `<dir>/<name>-<date>.json` and `.md`; returns their paths.
pub fn write(
    name: &str,
    json: &serde_json::Value,
    markdown: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = paystream_testkit::repo_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H%M%SZ");
    let j = dir.join(format!("{name}-{stamp}.json"));
    let m = dir.join(format!("{name}-{stamp}.md"));
    std::fs::write(&j, serde_json::to_string_pretty(json)?)?;
    std::fs::write(&m, markdown)?;
    Ok((j, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.9), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }
}
