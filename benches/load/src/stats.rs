//! Clock, percentiles, /proc readings and result output.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

pub fn start_clock() {
    START.get_or_init(Instant::now);
}

/// Monotonic nanoseconds since the tool started.
pub fn now_ns() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Percentile (0..=100) of sorted samples, nearest-rank.
pub fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

/// Summary of latency samples (ns) as JSON, in milliseconds.
pub fn latency_json(samples: &mut [u64]) -> serde_json::Value {
    samples.sort_unstable();
    let mean = if samples.is_empty() {
        0.0
    } else {
        samples.iter().map(|&x| x as f64).sum::<f64>() / samples.len() as f64 / 1e6
    };
    serde_json::json!({
        "count": samples.len(),
        "p50_ms": ms(pct(samples, 50.0)),
        "p90_ms": ms(pct(samples, 90.0)),
        "p99_ms": ms(pct(samples, 99.0)),
        "p999_ms": ms(pct(samples, 99.9)),
        "max_ms": ms(samples.last().copied().unwrap_or(0)),
        "mean_ms": (mean * 1000.0).round() / 1000.0,
    })
}

/// VmRSS of a process in kB.
pub fn rss_kb(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS in {path}"))
}

/// The three load averages, as `uptime` shows them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Print the JSON line on stdout and append it to `out` if given.
pub fn emit(v: &serde_json::Value, out: Option<&std::path::Path>) -> Result<(), String> {
    let line = v.to_string();
    println!("{line}");
    if let Some(p) = out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| format!("open {}: {e}", p.display()))?;
        writeln!(f, "{line}").map_err(|e| format!("write {}: {e}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(pct(&v, 50.0), 50);
        assert_eq!(pct(&v, 99.0), 99);
        assert_eq!(pct(&v, 100.0), 100);
        assert_eq!(pct(&v, 0.0), 1);
        assert_eq!(pct(&[], 50.0), 0);
    }
}
