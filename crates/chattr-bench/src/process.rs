//! The server's CPU time and resident memory, read from `/proc/<pid>` (Linux), so results
//! can be normalised per core and memory per connection computed. A server may be several
//! processes (a peer and its PostgreSQL, whose backends are child processes): readings add
//! up the given processes and every descendant of theirs alive at the time.

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` times (100 on every Linux this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Usage {
    /// User plus system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident memory in bytes.
    pub rss_bytes: u64,
}

/// Reads the usage of process `pid`; `None` if it cannot be read.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    Some(Usage { cpu_seconds: (utime + stime) / TICKS_PER_SECOND, rss_bytes: rss_kib * 1024 })
}

/// The summed usage of `pids` and all their descendants; `None` if none can be read.
pub fn usage_of(pids: &[u32]) -> Option<Usage> {
    let mut all: Vec<u32> = pids.to_vec();
    let children = parents();
    let mut i = 0;
    while i < all.len() {
        let pid = all[i];
        all.extend(children.iter().filter(|(_, parent)| *parent == pid).map(|(child, _)| *child));
        i += 1;
    }
    all.sort_unstable();
    all.dedup();
    all.into_iter().filter_map(usage).reduce(|a, b| Usage {
        cpu_seconds: a.cpu_seconds + b.cpu_seconds,
        rss_bytes: a.rss_bytes + b.rss_bytes,
    })
}

/// `(pid, parent pid)` of every process.
fn parents() -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After ')': state, then the parent's pid.
            let parent = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, parent))
        })
        .collect()
}

/// What a process used during a run.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Used {
    pub cpu_seconds: f64,
    /// CPU seconds per second of the run: 1.0 is one core busy.
    pub cores: f64,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
}

/// The difference between two readings `seconds` apart.
pub fn used(start: Usage, end: Usage, seconds: f64) -> Used {
    let cpu_seconds = (end.cpu_seconds - start.cpu_seconds).max(0.0);
    Used {
        cpu_seconds,
        cores: if seconds > 0.0 { cpu_seconds / seconds } else { 0.0 },
        rss_start_bytes: start.rss_bytes,
        rss_end_bytes: end.rss_bytes,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let u = super::usage(std::process::id()).expect("own /proc entry");
        assert!(u.rss_bytes > 0);
        assert!(u.cpu_seconds >= 0.0);
        let me = std::process::id();
        let child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        let with_child = super::usage_of(&[me]).expect("own tree");
        assert!(with_child.rss_bytes > u.rss_bytes / 2);
        assert!(super::parents().contains(&(child.id(), me)));
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
}
