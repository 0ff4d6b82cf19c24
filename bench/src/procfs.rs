//! What `/proc` says about the processes under test: memory, CPU time (whole process and per
//! thread), and the machine's load average.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

/// `USER_HZ`: the unit of `utime`/`stime` in `/proc/<pid>/stat`, fixed at 100 by the Linux ABI.
const USER_HZ: u64 = 100;

/// Memory of a process from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size so far (`VmHWM`).
    pub hwm_kib: u64,
    /// Of `VmRSS`: anonymous memory (heap, stacks, buffers: what the process allocated).
    pub anon_kib: u64,
    /// Of `VmRSS`: file-backed pages (mostly the binary's own code, clean and shared with the
    /// page cache).
    pub file_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("{path} has no {name}"))
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
        })
    }
}

/// User plus system CPU time of a process (all its threads, live and exited) or of one thread.
pub fn cpu_time(stat_path: &str) -> anyhow::Result<(String, Duration)> {
    let stat = std::fs::read_to_string(stat_path).with_context(|| format!("read {stat_path}"))?;
    parse_stat(&stat).with_context(|| format!("unexpected {stat_path}: {stat:?}"))
}

/// `(comm, utime + stime)` from a `stat` line. `comm` is in parentheses and may hold spaces.
fn parse_stat(stat: &str) -> Option<(String, Duration)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // After `comm`: state is field 3, utime field 14, stime field 15.
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some((comm, Duration::from_millis(ticks * 1000 / USER_HZ)))
}

/// CPU time of process `pid`.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    cpu_time(&format!("/proc/{pid}/stat")).map(|(_, t)| t)
}

/// CPU time of each live thread of `pid`, summed by thread name (tokio workers share one).
pub fn threads_cpu(pid: u32) -> anyhow::Result<BTreeMap<String, Duration>> {
    let dir = format!("/proc/{pid}/task");
    let mut by_name = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let path = entry?.path().join("stat");
        // A thread may exit between the listing and the read.
        if let Ok((name, t)) = cpu_time(&path.to_string_lossy()) {
            *by_name.entry(name).or_insert(Duration::ZERO) += t;
        }
    }
    Ok(by_name)
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory_and_cpu() {
        let m = Memory::of(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
        process_cpu(std::process::id()).unwrap();
        assert!(!threads_cpu(std::process::id()).unwrap().is_empty());
        assert!(load_average().is_some());
    }

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let line = "42 (tokio-runtime-w (x)) S 1 42 42 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 3 0 1";
        let (comm, t) = parse_stat(line).unwrap();
        assert_eq!(comm, "tokio-runtime-w (x)");
        assert_eq!(t, Duration::from_secs(3));
        assert!(parse_stat("garbage").is_none());
    }
}
