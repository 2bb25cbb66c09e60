//! `loadgen overhead`: what the observability layers cost. Runs `bench` for `rpc` (no
//! layer), `rpc-seam` (a layer on both sides that only passes calls on), `rpc-metrics` (metrics on both sides) and `rpc-observed` (metrics, tracing
//! spans and trace context, no subscriber) in alternating rounds, each in fresh
//! processes, and reports calls/s of each as a ratio to `rpc`: per round (neighbouring
//! runs share the machine's load) and the median over rounds.

use anyhow::Result;

use crate::matrix::{machine, run_loadgen};
use crate::Flags;

const MODES: [&str; 4] = ["rpc", "rpc-seam", "rpc-metrics", "rpc-observed"];

/// Runs the rounds and prints the table and a `RESULT` line.
pub fn run(flags: &Flags) -> Result<()> {
    let rounds: usize = flags.get("rounds", 5)?;
    let duration = flags.str("duration", "3");
    let warmup = flags.str("warmup", "1");
    let concurrency = flags.str("concurrency", "64");
    let payload = flags.str("payload", "8");
    // `--modes rpc,rpc-metrics` runs a subset (`rpc` always first: the reference).
    let only = flags.str("modes", &MODES.join(","));
    let modes: Vec<&str> = MODES
        .iter()
        .copied()
        .filter(|m| *m == "rpc" || only.split(',').any(|o| o == *m))
        .collect();

    // ratios[m][r]: calls/s of MODES[m] over that of `rpc` in round r.
    let mut ratios = vec![Vec::new(); modes.len()];
    let mut rates = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        let mut calls = vec![0.0; modes.len()];
        // Rotate the order so that no mode always runs first (or last) in a round.
        for k in 0..modes.len() {
            let m = (round + k) % modes.len();
            let result = run_loadgen(
                &[
                    "bench",
                    "--mode",
                    modes[m],
                    "--concurrency",
                    &concurrency,
                    "--payload",
                    &payload,
                    "--duration",
                    &duration,
                    "--warmup",
                    &warmup,
                ],
                false,
            )?;
            calls[m] = result.get("calls_per_s").copied().unwrap_or(0.0);
        }
        for m in 0..modes.len() {
            rates[m].push(calls[m]);
            ratios[m].push(calls[m] / calls[0].max(1.0));
        }
    }

    println!(
        "\n{}; {concurrency} in flight, payload {payload} B, {rounds} rounds of {duration} s",
        machine()
    );
    println!(
        "\n| mode | calls/s (median) | ratio to `rpc` (median of rounds) | ratios per round |"
    );
    println!("|---|---|---|---|");
    for m in 0..modes.len() {
        let per_round: Vec<String> = ratios[m].iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "| `{}` | {:.0} | {:.3} | {} |",
            modes[m],
            median(&rates[m]),
            median(&ratios[m]),
            per_round.join(", ")
        );
    }
    let fields: Vec<String> = modes
        .iter()
        .zip(&ratios)
        .skip(1)
        .map(|(mode, r)| format!("{}_ratio={:.4}", mode.replace('-', "_"), median(r)))
        .collect();
    println!(
        "RESULT {} rpc_calls_per_s={:.1}",
        fields.join(" "),
        median(&rates[0])
    );
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
