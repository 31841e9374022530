//! What the benchmarks share: their settings from the environment, playing Synapse's
//! push, percentiles, and the measured process's memory and CPU time. Each benchmark includes it with
//! `#[path = "support.rs"] mod support;` and uses what it needs.
#![allow(dead_code)] // each benchmark binary uses a part of it

use std::time::Duration;

/// The environment variable `name`, or `default`; missing and no default: the benchmark
/// was not started by its `scripts/bench-*.sh`.
pub fn var(name: &str, default: Option<&str>) -> String {
    std::env::var(name)
        .ok()
        .or_else(|| default.map(ToOwned::to_owned))
        .unwrap_or_else(|| panic!("{name} is required (run the benchmark's scripts/bench-*.sh)"))
}

/// The `p`th percentile of `sorted` (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("bridge process");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time (user + system) process `pid` has used, from /proc (clock ticks of 10 ms).
pub fn cpu_time(pid: &str) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after the command (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// CPU time (user + system) of every Postgres process on this machine (backends, WAL
/// writer, checkpointer…) but those in `except`.
pub fn postgres_cpu_time(except: &[String]) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            pid.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (cmdline.starts_with(b"postgres") && !except.contains(&pid)).then_some(())?;
            // A backend may exit between the listing and the read.
            std::fs::metadata(format!("/proc/{pid}/stat")).ok()?;
            Some(cpu_time(&pid))
        })
        .sum()
}

/// Pushes `body` to the bridge at `addr` as Synapse would (transaction id `<name>-<random>`)
/// and expects its 200.
pub async fn push(
    http: &reqwest::Client,
    addr: &str,
    token: &str,
    name: &str,
    body: &serde_json::Value,
) {
    let response = http
        .put(format!(
            "http://{addr}/_matrix/app/v1/transactions/{name}-{}",
            rand::random::<u32>()
        ))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 200, "transaction {name} refused");
}
