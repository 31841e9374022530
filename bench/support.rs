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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("bridge process");
    stat_ticks(&stat, false)
}

/// User + system ticks of a `/proc/<pid>/stat` line, with its reaped children's too.
fn stat_ticks(stat: &str, with_children: bool) -> Duration {
    // The fields after the command (which is in parentheses and may hold spaces).
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap())
        .collect();
    let ticks = fields[0]
        + fields[1]
        + if with_children {
            fields[2] + fields[3]
        } else {
            0
        };
    Duration::from_millis(ticks * 10)
}

/// CPU time of each Postgres process now (the postmaster with what its exited children,
/// autovacuum workers and old backends, used), by pid, but those in `except`. Meant for a
/// machine where the benchmark's database is the only busy one.
pub fn postgres_cpu(except: &[String]) -> std::collections::HashMap<String, Duration> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().into_string().ok()?;
            pid.bytes().all(|b| b.is_ascii_digit()).then_some(())?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let postmaster = cmdline.windows(13).any(|w| w == b"/bin/postgres");
            (!except.contains(&pid) && (postmaster || cmdline.starts_with(b"postgres")))
                .then_some(())?;
            // A backend may exit between the listing and the read.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, stat_ticks(&stat, postmaster)))
        })
        .collect()
}

/// The Postgres CPU used between two [`postgres_cpu`] readings: per process, so one that
/// started or ended in between counts for what it used in between (one that ended is
/// counted in its postmaster's children).
pub fn postgres_cpu_since(
    before: &std::collections::HashMap<String, Duration>,
    after: &std::collections::HashMap<String, Duration>,
) -> Duration {
    after
        .iter()
        .map(|(pid, used)| used.saturating_sub(before.get(pid).copied().unwrap_or_default()))
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
