//! The process's own figures (CPU, memory, file descriptors, threads), read from `/proc`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::state::{encode_one, gauge};

/// The process's own figures, read from `/proc` when scraped (Linux only; elsewhere there are
/// none), with the standard names.
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's `USER_HZ`, 100 on every Linux
/// architecture's user-space ABI.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Default, PartialEq)]
struct ProcessState {
    cpu_seconds: f64,
    threads: u64,
    start_time_seconds: Option<f64>,
    virtual_memory_bytes: u64,
    resident_memory_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcessState {
    fn read() -> Option<ProcessState> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let mut state = ProcessState::from_stat(&stat)?;
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            state.resident_memory_bytes = resident_bytes(&status);
        }
        state.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits") {
            state.max_fds = max_open_files(&limits);
        }
        if let (Some(started), Ok(machine)) = (
            state.start_time_seconds,
            std::fs::read_to_string("/proc/stat"),
        ) {
            state.start_time_seconds = boot_time(&machine).map(|boot| boot + started);
        }
        Some(state)
    }

    /// The figures of `/proc/<pid>/stat`; the start time is then seconds after boot.
    fn from_stat(stat: &str) -> Option<ProcessState> {
        // The command name is in parentheses and may hold anything, parentheses included.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        // Fields from the state (the 3rd of the line) on, numbered from 0 here.
        let number = |index: usize| fields.get(index)?.parse::<u64>().ok();
        let user_ticks = number(11)?;
        let system_ticks = number(12)?;
        Some(ProcessState {
            cpu_seconds: (user_ticks + system_ticks) as f64 / USER_HZ,
            threads: number(17)?,
            start_time_seconds: number(19).map(|ticks| ticks as f64 / USER_HZ),
            virtual_memory_bytes: number(20)?,
            ..ProcessState::default()
        })
    }
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The soft limit on open files in `/proc/<pid>/limits` (none when unlimited).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.get("Max open files".len()..)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn boot_time(machine: &str) -> Option<f64> {
    let line = machine.lines().find(|line| line.starts_with("btime "))?;
    line.get(6..)?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|at| at as f64)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(process) = ProcessState::read() else {
            return Ok(());
        };
        encode_one(
            &mut encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            &ConstCounter::new(process.cpu_seconds),
        )?;
        if let Some(bytes) = process.resident_memory_bytes {
            encode_one(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &gauge(bytes),
            )?;
        }
        encode_one(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            &gauge(process.virtual_memory_bytes),
        )?;
        if let Some(open) = process.open_fds {
            encode_one(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                &gauge(open),
            )?;
        }
        if let Some(max) = process.max_fds {
            encode_one(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                &gauge(max),
            )?;
        }
        encode_one(
            &mut encoder,
            "process_threads",
            "Number of OS threads in the process.",
            &gauge(process.threads),
        )?;
        if let Some(started) = process.start_time_seconds {
            encode_one(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                &ConstGauge::new(started),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, State};

    #[test]
    fn process_figures_are_read_from_proc() {
        let stat = "4242 (star cite (x)) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 50 0 0 20 0 \
                    9 0 12345 104857600 2560 18446744073709551615";
        let state = ProcessState::from_stat(stat).unwrap();
        assert_eq!(state.cpu_seconds, 3.0);
        assert_eq!(state.threads, 9);
        assert_eq!(state.start_time_seconds, Some(123.45));
        assert_eq!(state.virtual_memory_bytes, 104_857_600);
        assert_eq!(
            resident_bytes("Name:\tstarcite\nVmRSS:\t   20480 kB\n"),
            Some(20 * 1024 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\n"), Some(1.7e9));
        if cfg!(target_os = "linux") {
            let text = Metrics::new().render(State::default());
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
                "process_start_time_seconds ",
            ] {
                assert!(text.contains(name), "no {name} in\n{text}");
            }
        }
    }
}
