//! Render benchmark: simulated steps per second per core at 64×64 (target ≥ 5,000).
//!
//! `cargo bench -p lapa-sim --bench render` — runs the scripted expert in closed loop on one
//! thread, for both embodiments and the seen and unseen-environment splits, and times
//! (a) rendering alone and (b) a full recorded step (expert + IK + physics substeps + render).
//! Prints a Markdown table; `-- --out FILE` also writes it to FILE.

use lapa_sim::expert::{ArmTracker, Expert, HandMotion};
use lapa_sim::rng::Rng;
use lapa_sim::{Action, Embodiment, Env, EnvConfig, Image, Split};
use std::hint::black_box;
use std::time::Instant;

const STEPS: usize = 20_000;
const REPEATS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Returns (render-only steps/s, full step steps/s).
fn bench(emb: Embodiment, split: Split, size: usize) -> (f64, f64) {
    let cfg = EnvConfig { width: size, height: size, ..EnvConfig::default() };
    let mut env = Env::new(cfg);
    let mut img = Image::new(size, size);
    let mut render_rates = Vec::new();
    let mut step_rates = Vec::new();
    for rep in 0..REPEATS {
        // Full steps: a fresh episode whenever one ends.
        let mut seed = rep as u64 * 1000;
        let mut rng = Rng::new(seed);
        let dt = 1.0 / cfg.fps as f32;
        let start = Instant::now();
        let mut done = 0;
        while done < STEPS {
            env.reset(seed, emb, None, split);
            seed += 1;
            let mut expert = Expert::new(&env.task().goal, env.world());
            let mut arm = ArmTracker::new(env.world());
            let mut hand = HandMotion::new(env.world(), &mut rng);
            for _ in 0..60 {
                let t = expert.command(env.world());
                let a = match emb {
                    Embodiment::Arm => Action::JointTargets(arm.action(&t, dt)),
                    Embodiment::Hand => Action::HandPose(hand.next_pose(&t, dt)),
                };
                env.advance(&a);
                env.render_into(&mut img);
                black_box(&img);
                done += 1;
            }
        }
        step_rates.push(done as f64 / start.elapsed().as_secs_f64());
        // Render only, on the final scene.
        let start = Instant::now();
        for _ in 0..STEPS {
            env.render_into(&mut img);
            black_box(&img);
        }
        render_rates.push(STEPS as f64 / start.elapsed().as_secs_f64());
    }
    (median(render_rates), median(step_rates))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).cloned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let mut table = String::new();
    table.push_str("# Render benchmark (target: ≥ 5,000 steps/s per core at 64×64)\n\n");
    table.push_str("Command: `cargo bench -p lapa-sim --bench render -- --out $PWD/results/sim/render_bench.md`\n\n");
    table.push_str(&format!(
        "Single thread on {cpu} ({} cores visible); median of {REPEATS} runs of {STEPS} steps.\n\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    ));
    table.push_str("| embodiment | split | size | render only (frames/s) | full step: expert + physics + render (steps/s) |\n|---|---|---|---|---|\n");
    for (emb, split, size) in [
        (Embodiment::Arm, Split::Seen, 64),
        (Embodiment::Hand, Split::Seen, 64),
        (Embodiment::Arm, Split::UnseenEnvironment, 64),
        (Embodiment::Hand, Split::UnseenEnvironment, 64),
        (Embodiment::Arm, Split::Seen, 128),
    ] {
        let (r, s) = bench(emb, split, size);
        let line = format!("| {} | {} | {size}×{size} | {r:.0} | {s:.0} |\n", emb.name(), split.name());
        print!("{line}");
        table.push_str(&line);
    }
    if let Some(path) = out
        && let Err(e) = std::fs::write(&path, &table)
    {
        eprintln!("cannot write {path}: {e}");
        std::process::exit(1);
    }
}
