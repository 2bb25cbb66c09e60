//! Runs every point of the performance matrix as separate `loadgen` processes and writes a
//! Markdown table of the framework's ratios to the raw framed echos (`raw`, and
//! `raw-batched` for reference) from the same run, then
//! a table of small-call latency during a large stream transfer (`loadgen interleave`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::Flags;

/// Which way a ratio must go to meet its target.
#[derive(Clone, Copy)]
enum Goal {
    AtLeast,
    AtMost,
}

/// One row of the table.
struct Row {
    point: &'static str,
    metric: &'static str,
    unit: &'static str,
    goal: Goal,
    target: f64,
}

const ROWS: &[(&str, Row)] = &[
    (
        "c64",
        Row {
            point: "echo u64, 64 in flight, 1 connection",
            metric: "calls_per_s",
            unit: "calls/s",
            goal: Goal::AtLeast,
            target: 0.80,
        },
    ),
    (
        "c256",
        Row {
            point: "echo u64, 256 in flight, 1 connection",
            metric: "calls_per_s",
            unit: "calls/s",
            goal: Goal::AtLeast,
            target: 0.75,
        },
    ),
    (
        "pinned",
        Row {
            point: "echo u64, 1 in flight, both pinned to one core",
            metric: "p50_us",
            unit: "p50 µs",
            goal: Goal::AtMost,
            target: 1.2,
        },
    ),
    (
        "mib",
        Row {
            point: "1 MiB payload, 4 in flight",
            metric: "mib_per_s",
            unit: "MiB/s",
            goal: Goal::AtLeast,
            target: 0.80,
        },
    ),
    (
        "c256",
        Row {
            point: "echo u64, 256 in flight",
            metric: "cpu_us_per_call",
            unit: "CPU µs/call",
            goal: Goal::AtMost,
            target: 1.5,
        },
    ),
];

fn bench_args(point: &str) -> (Vec<&'static str>, bool) {
    match point {
        "c64" => (vec!["--concurrency", "64"], false),
        "c256" => (vec!["--concurrency", "256"], false),
        "pinned" => (vec!["--concurrency", "1"], true),
        "mib" => (vec!["--concurrency", "4", "--payload", "1048576"], false),
        _ => unreachable!(),
    }
}

/// Runs `loadgen ARGS` (pinned to CPU 0 with taskset if asked) and parses its RESULT line.
pub(crate) fn run_loadgen(args: &[&str], pinned: bool) -> Result<HashMap<String, f64>> {
    let exe = std::env::current_exe()?;
    let mut command = if pinned {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let output = command
        .args(args)
        .output()
        .with_context(|| format!("running loadgen {args:?}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprint!("{stdout}");
    if !output.status.success() {
        bail!(
            "loadgen {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("no RESULT line")?;
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

pub fn run(flags: &Flags) -> Result<()> {
    let duration = flags.str("duration", "3");
    let warmup = flags.str("warmup", "1");
    let with_tarpc = cfg!(feature = "tarpc") && flags.0.contains_key("tarpc");
    let with_tonic = cfg!(feature = "tonic") && flags.0.contains_key("tonic");
    let mut modes = vec!["raw", "raw-batched", "rpc"];
    // The baselines from other frameworks, each with a column and its ratio to `raw`.
    let mut baselines = Vec::new();
    if with_tarpc {
        baselines.push("tarpc");
    }
    if with_tonic {
        baselines.push("tonic");
    }
    modes.extend(baselines.iter().copied());

    let mut results: HashMap<(&str, &str), HashMap<String, f64>> = HashMap::new();
    for point in ["c64", "c256", "pinned", "mib"] {
        let (args, pinned) = bench_args(point);
        for mode in &modes {
            let mut full = vec![
                "bench",
                "--mode",
                mode,
                "--duration",
                &duration,
                "--warmup",
                &warmup,
            ];
            full.extend(args.iter().copied());
            results.insert((point, mode), run_loadgen(&full, pinned)?);
        }
    }
    let allocs = run_loadgen(&["allocs"], false)?;
    let idle = run_loadgen(
        &[
            "idle",
            "--connections",
            &flags.str("idle-connections", "10000"),
        ],
        false,
    )?;
    let interleave = run_loadgen(&["interleave"], false)?;

    let mut out = String::new();
    writeln!(out, "Machine: {}. Loopback TCP; client and server are separate processes with multi-threaded tokio runtimes; {duration} s measured after {warmup} s warm-up per run.\n", machine())?;
    writeln!(out, "Targets are ratios to `raw` (a write and a flush per frame); `raw-batched` (a flush only when no frame is waiting) is the lowest cost any framework could reach, shown for reference.\n")?;
    let baseline_header: String = baselines
        .iter()
        .map(|b| format!(" {b} | {b}/raw |"))
        .collect();
    let baseline_rule = "---|---|".repeat(baselines.len());
    // The raw-batched and baseline cells of the rows only `rpc` has.
    let blanks = " | |".repeat(1 + baselines.len());
    writeln!(
        out,
        "| point | metric | raw | rpc | rpc/raw | target | met | raw-batched | rpc/raw-batched |{baseline_header}"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|{baseline_rule}")?;
    for (point, row) in ROWS {
        let raw = results[&(*point, "raw")][row.metric];
        let rpc = results[&(*point, "rpc")][row.metric];
        let batched = results[&(*point, "raw-batched")][row.metric];
        let ratio = rpc / raw;
        let met = match row.goal {
            Goal::AtLeast => ratio >= row.target,
            Goal::AtMost => ratio <= row.target,
        };
        let target = match row.goal {
            Goal::AtLeast => format!(">= {:.2}x", row.target),
            Goal::AtMost => format!("<= {:.2}x", row.target),
        };
        let mut line = format!(
            "| {} | {} | {} | {} | {ratio:.2}x | {target} | {} |",
            row.point,
            row.unit,
            fmt(raw),
            fmt(rpc),
            if met { "yes" } else { "**no**" }
        );
        write!(line, " {} | {:.2}x |", fmt(batched), rpc / batched)?;
        for baseline in &baselines {
            let value = results[&(*point, *baseline)][row.metric];
            write!(line, " {} | {:.2}x |", fmt(value), value / raw)?;
        }
        writeln!(out, "{line}")?;
    }
    let per_call = allocs["allocations_per_call"];
    writeln!(out, "| sequential echo u64 | allocations per round trip (client + server) | - | {per_call:.2} | - | <= 4 | {} |{blanks}", if per_call <= 4.0 { "yes" } else { "**no**" })?;
    let per_conn = idle["bytes_per_connection"] / 1024.0;
    writeln!(out, "| {} idle connections | server RSS per connection | - | {per_conn:.2} KiB | - | <= 10 KiB | {} |{blanks}", idle["connections"], if per_conn <= 10.0 { "yes" } else { "**no**" })?;

    writeln!(out, "\nLatency detail (µs, p50 / p99 / p99.9):\n")?;
    writeln!(out, "| point | {} |", modes.join(" | "))?;
    writeln!(out, "|---|{}", "---|".repeat(modes.len()))?;
    for point in ["c64", "c256", "pinned", "mib"] {
        let cells: Vec<String> = modes
            .iter()
            .map(|m| {
                let r = &results[&(point, *m)];
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    r["p50_us"], r["p99_us"], r["p999_us"]
                )
            })
            .collect();
        writeln!(out, "| {point} | {} |", cells.join(" | "))?;
    }

    writeln!(
        out,
        "\nSmall-call p99 during a {:.0} MiB stream transfer: ratio to alone (echo u64, 1 in flight, on the same connection as a server stream of {:.0} KiB items; the transfer's rate alone and with the calls):\n",
        interleave["transfer_mib"],
        interleave["chunk_bytes"] / 1024.0
    )?;
    writeln!(
        out,
        "| small calls | calls | p50 µs | p99 µs | p99.9 µs | transfer MiB/s |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for (name, key, rate) in [
        ("alone", "alone", "transfer_alone_mib_per_s"),
        ("during the transfer", "during", "transfer_mib_per_s"),
    ] {
        writeln!(
            out,
            "| {name} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} |",
            interleave[&format!("{key}_calls")],
            interleave[&format!("{key}_p50_us")],
            interleave[&format!("{key}_p99_us")],
            interleave[&format!("{key}_p999_us")],
            interleave[rate],
        )?;
    }
    writeln!(
        out,
        "| **ratio during / alone** | | {:.2}x | **{:.2}x** | {:.2}x | |",
        interleave["p50_ratio"],
        interleave["p99_ratio"],
        interleave["during_p999_us"] / interleave["alone_p999_us"],
    )?;
    println!("{out}");
    if let Some(path) = flags.0.get("out") {
        std::fs::write(path, &out)?;
    }
    Ok(())
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}
