//! Where the machine's CPU time goes during a run: the service's hash workers, the rest of the
//! service, Postgres and the benchmark itself, from the kernel's per-process counters in
//! `/proc`. Cumulative user + system time, so two samples around a run give what each spent
//! on it.

use std::path::Path;
use std::process::Command;

/// CPU seconds each part has spent so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// The service's threads named `argon2-*` (the hash pool).
    pub hash: f64,
    /// The service's other threads.
    pub service: f64,
    /// Every Postgres process (backends, WAL writer, checkpointer, autovacuum).
    pub postgres: f64,
    /// The benchmark's own process (the HTTP client).
    pub benchmark: f64,
    /// Every process on the machine (`/proc/stat`), so that what no part above took shows.
    pub machine: f64,
}

impl CpuTimes {
    /// What was spent between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            hash: self.hash - before.hash,
            service: self.service - before.service,
            postgres: self.postgres - before.postgres,
            benchmark: self.benchmark - before.benchmark,
            machine: self.machine - before.machine,
        }
    }

    /// What the machine spent outside every part above.
    pub fn rest_of_machine(&self) -> f64 {
        self.machine - self.hash - self.service - self.postgres - self.benchmark
    }
}

/// Kernel clock ticks a second, the unit of `/proc`'s CPU times.
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The command name and user + system ticks of a `/proc/…/stat` file.
fn stat(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The name is in parentheses and may hold spaces; the fields after it are plain.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let mut fields = text.get(close + 1..)?.split_whitespace();
    // After the name: state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt,
    // majflt, cmajflt, then utime and stime.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// Samples the counters; `service` is the pid of the service.
pub fn sample(service: Option<u32>) -> CpuTimes {
    let per_tick = 1.0 / ticks_per_second();
    let mut times = CpuTimes::default();
    if let Some(pid) = service {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Some((name, ticks)) = stat(&task.path().join("stat")) {
                    let seconds = ticks as f64 * per_tick;
                    if name.starts_with("argon2-") {
                        times.hash += seconds;
                    } else {
                        times.service += seconds;
                    }
                }
            }
        }
    }
    if let Ok(processes) = std::fs::read_dir("/proc") {
        for process in processes.flatten() {
            let is_pid = process
                .file_name()
                .to_str()
                .is_some_and(|name| name.bytes().all(|byte| byte.is_ascii_digit()));
            if !is_pid {
                continue;
            }
            if let Some((name, ticks)) = stat(&process.path().join("stat")) {
                if name == "postgres" {
                    times.postgres += ticks as f64 * per_tick;
                }
            }
        }
    }
    if let Some((_, ticks)) = stat(Path::new("/proc/self/stat")) {
        times.benchmark = ticks as f64 * per_tick;
    }
    // The first line of /proc/stat: "cpu" and ticks in user, nice, system, idle, iowait, irq,
    // softirq, steal, …; busy is all but idle and iowait.
    if let Ok(text) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = text.lines().next() {
            let ticks: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|field| field.parse().ok())
                .collect();
            let busy: u64 = ticks
                .iter()
                .take(8)
                .enumerate()
                .filter(|(index, _)| *index != 3 && *index != 4)
                .map(|(_, ticks)| ticks)
                .sum();
            times.machine = busy as f64 * per_tick;
        }
    }
    times
}
