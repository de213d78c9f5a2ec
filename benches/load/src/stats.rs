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

/// CPU time (user + system) a process has used, in ns, from `/proc/PID/stat`
/// (clock-tick resolution: 10 ms at the usual 100 Hz). Includes exited threads.
pub fn cpu_stat_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(ticks * 1_000_000_000 / hz)
}

/// CPU time of each live thread of a process, in ns, from
/// `/proc/PID/task/TID/schedstat` (nanosecond resolution), sorted by thread id.
pub fn cpu_sched_ns(pid: u32) -> Option<Vec<(u32, u64)>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue; // thread gone
        };
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            out.push((tid, ns));
        }
    }
    out.sort_unstable();
    (!out.is_empty()).then_some(out)
}

/// CPU used by the threads of `after` since `before`: a thread absent from
/// `before` started in between and counts whole. Threads that exited in
/// between are missing (their share of the interval is lost).
fn sched_delta(before: &[(u32, u64)], after: &[(u32, u64)]) -> u64 {
    after
        .iter()
        .map(
            |&(tid, ns)| match before.binary_search_by_key(&tid, |&(t, _)| t) {
                Ok(i) => ns.saturating_sub(before[i].1),
                Err(_) => ns,
            },
        )
        .sum()
}

/// Both CPU readings of a process at one instant.
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    pub stat_ns: Option<u64>,
    pub sched: Option<Vec<(u32, u64)>>,
}

impl CpuSample {
    pub fn read(pid: Option<u32>) -> Self {
        match pid {
            Some(p) => CpuSample {
                stat_ns: cpu_stat_ns(p),
                sched: cpu_sched_ns(p),
            },
            None => CpuSample::default(),
        }
    }

    /// CPU used since `earlier`, in ms: (from /proc/PID/stat, from schedstat).
    pub fn ms_since(&self, earlier: &CpuSample) -> (Option<f64>, Option<f64>) {
        let stat = match (earlier.stat_ns, self.stat_ns) {
            (Some(a), Some(b)) => Some(ms(b.saturating_sub(a))),
            _ => None,
        };
        let sched = match (&earlier.sched, &self.sched) {
            (Some(a), Some(b)) => Some(ms(sched_delta(a, b))),
            _ => None,
        };
        (stat, sched)
    }
}

/// Per-CPU (busy, total) jiffies from `/proc/stat` (busy = everything but
/// idle and iowait), indexed by CPU number.
pub fn cpu_ticks() -> Vec<(u64, u64)> {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    parse_cpu_ticks(&s)
}

fn parse_cpu_ticks(s: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for l in s.lines() {
        // "cpuN ..." lines only: not the "cpu  ..." total.
        let Some(rest) = l
            .strip_prefix("cpu")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let Some(Ok(cpu)) = f.next().map(str::parse::<usize>) else {
            continue;
        };
        let v: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
        if v.len() < 5 {
            continue;
        }
        let total: u64 = v.iter().sum();
        let idle = v[3] + v[4];
        if out.len() <= cpu {
            out.resize(cpu + 1, (0, 0));
        }
        out[cpu] = (total - idle, total);
    }
    out
}

/// Busy % of each CPU between two `cpu_ticks` readings.
pub fn cpu_busy_pct(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.1.saturating_sub(b.1).max(1) as f64;
            (a.0.saturating_sub(b.0) as f64 / total * 1000.0).round() / 10.0
        })
        .collect()
}

/// Median of some values (mean of the two middle ones for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    let x = if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    };
    Some((x * 1000.0).round() / 1000.0)
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

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn per_thread_delta() {
        // Thread 2 exited (lost), thread 4 is new (counted whole).
        let before = [(1, 100), (2, 50), (3, 10)];
        let after = [(1, 150), (3, 10), (4, 7)];
        assert_eq!(sched_delta(&before, &after), 57);
    }

    #[test]
    fn proc_stat_cpus() {
        let s = "cpu  10 0 10 100 5 0 0 0 0 0\ncpu0 4 0 6 50 0 0 0 0 0 0\ncpu1 6 0 4 50 5 0 0 0 0 0\nintr 1 2\n";
        assert_eq!(parse_cpu_ticks(s), vec![(10, 60), (10, 65)]);
        let after = [(40, 90), (10, 95)];
        assert_eq!(
            cpu_busy_pct(&[(10, 60), (10, 65)], &after),
            vec![100.0, 0.0]
        );
    }

    #[test]
    fn own_cpu_readable() {
        let me = std::process::id();
        assert!(cpu_stat_ns(me).is_some());
        let a = CpuSample::read(Some(me));
        let b = CpuSample::read(Some(me));
        let (stat, _) = b.ms_since(&a);
        assert!(stat.is_some_and(|v| v >= 0.0));
    }
}
