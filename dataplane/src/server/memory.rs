//! Memory watermarks, after Envoy's overload manager: the process watches its resident
//! memory against its limit (the cgroup's, or `--memory-limit`) and, above a high
//! watermark, stops offering keep-alive and gives idle connections a short timeout;
//! above a critical one it closes idle connections, oldest first, and takes a new
//! connection only in place of an idle one. The admin listener is not in the budget, so
//! probes and `/metrics` keep answering throughout.
//!
//! The watch is a thread of its own, not a task on a traffic thread: a traffic thread
//! busy with load must not delay the answer to that load.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::budget::{ConnectionBudget, Pressure};
use crate::metrics::Metrics;

/// The high watermark, as a fraction of the limit.
pub const HIGH: f64 = 0.80;
/// The critical watermark, as a fraction of the limit.
pub const CRITICAL: f64 = 0.90;
/// How far below a watermark memory must fall before its state is left, as a fraction of
/// the limit, so that a process hovering at a watermark does not flap.
const HYSTERESIS: f64 = 0.05;
/// How often the watch looks.
const INTERVAL: Duration = Duration::from_millis(250);
/// What a connection is budgeted at when the cap is derived from the memory limit: one
/// that hyper holds between requests, buffers and all (parked ones cost far less; busy
/// ones are bounded by the watermarks). Measured in docs/benchmarks.md.
pub const BYTES_PER_CONNECTION: u64 = 40 * 1024;

/// The pressure for resident memory `resident` under `limit`, given the previous one.
pub fn classify(resident: u64, limit: u64, previous: Pressure) -> Pressure {
    let fraction = resident as f64 / limit.max(1) as f64;
    let above = |mark: f64, held: bool| {
        if held {
            fraction >= mark - HYSTERESIS
        } else {
            fraction >= mark
        }
    };
    if above(CRITICAL, previous == Pressure::Critical) {
        Pressure::Critical
    } else if above(HIGH, previous >= Pressure::High) {
        Pressure::High
    } else {
        Pressure::Normal
    }
}

/// The default `--max-connections`: as many connections as fit under the high watermark
/// at [`BYTES_PER_CONNECTION`], and no more than half the file descriptors the process
/// may open (each client connection may need an upstream one). 10,000 when neither is
/// known.
pub fn default_max_connections(memory_limit: Option<u64>, open_files: Option<u64>) -> usize {
    let by_memory = memory_limit.map(|limit| (limit as f64 * HIGH) as u64 / BYTES_PER_CONNECTION);
    let by_files = open_files.map(|files| files / 2);
    let max = match (by_memory, by_files) {
        (Some(memory), Some(files)) => memory.min(files),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => 10_000,
    };
    usize::try_from(max.max(64)).unwrap_or(usize::MAX)
}

/// The memory limit of the cgroup this process runs in (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`); `None` when unlimited or not found.
pub fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut candidates = Vec::new();
    for line in own.lines() {
        // v2: `0::/path`; v1: `N:memory:/path` (or a list of controllers with memory).
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if controllers.split(',').any(|name| name == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    // Inside a container's cgroup namespace the paths above may not exist; its root is
    // the container's own cgroup.
    candidates.push("/sys/fs/cgroup/memory.max".to_owned());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned());
    candidates
        .iter()
        .find_map(|path| std::fs::read_to_string(Path::new(path)).ok())
        .and_then(|text| parse_limit(&text))
}

/// A cgroup limit file's value; `None` for `max` and for v1's "unlimited" (a huge
/// page-rounded number).
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 60).then_some(value)
}

/// The soft limit on open files (`ulimit -n`), from /proc/self/limits.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The process's resident memory in bytes, from /proc/self/status.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts the thread that keeps `budget` to its limits: it closes parked connections whose
/// time is up and, with a memory limit, applies the watermarks. It ends when the budget
/// is dropped.
pub fn watch(
    budget: &Arc<ConnectionBudget>,
    memory_limit: Option<u64>,
    keep_alive: Duration,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let budget: Weak<ConnectionBudget> = Arc::downgrade(budget);
    metrics
        .memory_limit_bytes
        .set(memory_limit.map_or(0, |limit| i64::try_from(limit).unwrap_or(i64::MAX)));
    // With memory high, idle connections get a tenth of the keep-alive timeout.
    let short_keep_alive = (keep_alive / 10).max(Duration::from_secs(1));
    std::thread::Builder::new()
        .name("sluice-budget".to_owned())
        .spawn(move || {
            let mut pressure = Pressure::Normal;
            while let Some(budget) = budget.upgrade() {
                budget.expire_parked();
                let resident = resident_bytes();
                if let Some(resident) = resident {
                    metrics
                        .resident_memory_bytes
                        .set(i64::try_from(resident).unwrap_or(i64::MAX));
                }
                if let (Some(limit), Some(resident)) = (memory_limit, resident) {
                    let now = classify(resident, limit, pressure);
                    if now != pressure {
                        log_transition(pressure, now, resident, limit);
                        pressure = now;
                        budget.set_pressure(now);
                        metrics.memory_pressure.set(now as i64);
                    }
                    match pressure {
                        Pressure::Normal => {}
                        Pressure::High => {
                            budget.shed_idle_longer_than(short_keep_alive);
                        }
                        Pressure::Critical => {
                            // An eighth of the connections per look, so that memory has
                            // time to show what closing them gave back.
                            budget.shed_for_memory((budget.open() / 8).max(64));
                        }
                    }
                }
                drop(budget);
                std::thread::sleep(INTERVAL);
            }
        })?;
    Ok(())
}

fn log_transition(from: Pressure, to: Pressure, resident: u64, limit: u64) {
    let (resident_mib, limit_mib) = (resident / (1 << 20), limit / (1 << 20));
    if to > from {
        tracing::warn!(
            pressure = to.label(),
            resident_mib,
            limit_mib,
            "memory above a watermark: {}",
            match to {
                Pressure::Critical => "closing idle connections, new ones only in their place",
                _ => "no more keep-alive, idle connections closed sooner",
            }
        );
    } else {
        tracing::info!(
            pressure = to.label(),
            resident_mib,
            limit_mib,
            "memory back below a watermark"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn watermarks_rise_at_their_marks_and_fall_below_them_with_a_margin() {
        let limit = 100 * MIB;
        assert_eq!(
            classify(79 * MIB, limit, Pressure::Normal),
            Pressure::Normal
        );
        assert_eq!(classify(80 * MIB, limit, Pressure::Normal), Pressure::High);
        assert_eq!(
            classify(90 * MIB, limit, Pressure::Normal),
            Pressure::Critical
        );
        assert_eq!(
            classify(86 * MIB, limit, Pressure::Critical),
            Pressure::Critical
        );
        assert_eq!(
            classify(84 * MIB, limit, Pressure::Critical),
            Pressure::High
        );
        assert_eq!(classify(76 * MIB, limit, Pressure::High), Pressure::High);
        assert_eq!(classify(74 * MIB, limit, Pressure::High), Pressure::Normal);
        assert_eq!(classify(200 * MIB, 0, Pressure::Normal), Pressure::Critical);
    }

    #[test]
    fn the_default_cap_fits_the_memory_and_the_file_descriptors() {
        // 512 MiB: 80 % of it at 40 KiB a connection.
        assert_eq!(default_max_connections(Some(512 * MIB), None), 10_485);
        assert_eq!(default_max_connections(Some(512 * MIB), Some(8192)), 4096);
        assert_eq!(default_max_connections(None, Some(1_048_576)), 524_288);
        assert_eq!(default_max_connections(None, None), 10_000);
        assert_eq!(
            default_max_connections(Some(MIB), None),
            64,
            "never below 64"
        );
    }

    #[test]
    fn cgroup_limits_read_max_as_unlimited() {
        assert_eq!(parse_limit("536870912\n"), Some(512 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn this_process_can_read_its_memory_and_file_limits() {
        assert!(resident_bytes().is_some_and(|bytes| bytes > 0));
        assert!(open_files_limit().is_some_and(|files| files > 0));
    }
}
