//! Process metrics read from `/proc` at scrape time (Linux; elsewhere the
//! families are simply absent), under the names Prometheus client libraries
//! use, so stock dashboards and alerts work: resident and virtual memory, CPU
//! seconds, open and maximum file descriptors, threads, start time. Plus
//! `avatar_edge_build_info`.

use super::{Exposition, Kind};

/// `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`, fixed at 100
/// by the Linux ABI on every architecture this builds for.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc` says about this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub cpu_seconds: f64,
    pub threads: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// Parse `/proc/self/stat` (after the `(comm)` field, which may hold spaces),
/// `/proc/self/status`, `/proc/stat` (for `btime`) and `/proc/self/limits`.
pub fn parse(stat: &str, status: &str, proc_stat: &str, limits: &str) -> Option<ProcessStats> {
    // Fields after ") ": state is field 3, so index i here is field i + 3.
    let rest = &stat[stat.rfind(") ")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |field: usize| -> Option<f64> { f.get(field - 3)?.parse().ok() };
    let cpu_seconds = (num(14)? + num(15)?) / TICKS_PER_SECOND;
    let threads = num(20)? as u64;
    let start_ticks = num(22)?;
    let btime: f64 = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        Some(line.split_whitespace().next()?.parse::<u64>().ok()? * 1024)
    };
    let max_fds = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(ProcessStats {
        resident_bytes: kib("VmRSS:").unwrap_or(0),
        virtual_bytes: kib("VmSize:").unwrap_or(0),
        cpu_seconds,
        threads,
        start_time_seconds: btime + start_ticks / TICKS_PER_SECOND,
        open_fds: 0,
        max_fds,
    })
}

/// This process, now (`None` where there is no `/proc`).
pub fn read() -> Option<ProcessStats> {
    let r = |p: &str| std::fs::read_to_string(p).ok();
    let mut s = parse(
        &r("/proc/self/stat")?,
        &r("/proc/self/status")?,
        &r("/proc/stat")?,
        &r("/proc/self/limits").unwrap_or_default(),
    )?;
    s.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(s)
}

/// Write the process families and `avatar_edge_build_info`.
pub fn collect(out: &mut Exposition) {
    out.family(
        "avatar_edge_build_info",
        Kind::Gauge,
        "Always 1; the labels say which build is running.",
    )
    .sample(
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            (
                "profile",
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            ),
            ("target_arch", std::env::consts::ARCH),
            ("target_os", std::env::consts::OS),
        ],
        1,
    );
    let Some(p) = read() else { return };
    out.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        p.resident_bytes,
    );
    out.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        p.virtual_bytes,
    );
    out.family(
        "process_cpu_seconds_total",
        Kind::Counter,
        "Total user and system CPU time spent in seconds.",
    )
    .sample(&[], p.cpu_seconds);
    out.gauge(
        "process_open_fds",
        "Number of open file descriptors.",
        p.open_fds,
    );
    out.gauge(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        p.max_fds,
    );
    out.gauge("process_threads", "Number of OS threads.", p.threads);
    out.family(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since unix epoch in seconds.",
    )
    .sample(&[], p.start_time_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files_including_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (avatar edge) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 1000000 500 18446744073709551615";
        let status = "Name:\tavatar-edge\nVmSize:\t  204800 kB\nVmRSS:\t   51200 kB\nThreads:\t7\n";
        let proc_stat = "cpu  1 2 3\nbtime 1764460800\nprocesses 10\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            65536                524288               files\n";
        let p = parse(stat, status, proc_stat, limits).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.threads, 7);
        assert_eq!(p.start_time_seconds, 1764460800.0 + 123.45);
        assert_eq!(
            (p.resident_bytes, p.virtual_bytes),
            (51200 * 1024, 204800 * 1024)
        );
        assert_eq!(p.max_fds, 65536);
        assert_eq!(parse("garbage", status, proc_stat, limits), None);
    }

    #[test]
    fn this_process_reads_and_writes_every_family() {
        let mut out = Exposition::new();
        collect(&mut out);
        let text = out.finish();
        assert!(text.contains("avatar_edge_build_info{version=\""), "{text}");
        if cfg!(target_os = "linux") {
            for name in [
                "process_resident_memory_bytes",
                "process_cpu_seconds_total",
                "process_open_fds",
                "process_max_fds",
                "process_start_time_seconds",
            ] {
                assert!(text.contains(&format!("\n{name} ")), "{name}: {text}");
            }
            assert!(read().unwrap().resident_bytes > 0);
        }
    }
}
