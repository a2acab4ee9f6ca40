//! Dumps frames of one expert episode as a PPM strip (debugging aid).
use lapa_sim::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seed: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let emb = if args.get(2).map(|s| s.as_str()) == Some("hand") { Embodiment::Hand } else { Embodiment::Arm };
    let split = args.get(3).and_then(|s| Split::from_name(s)).unwrap_or(Split::Seen);
    let mut env = Env::new(EnvConfig { width: 128, height: 128, ..EnvConfig::default() });
    let demo = run_expert(&mut env, seed, emb, None, split, true);
    println!("{} success {} steps {}", demo.instruction, demo.success, demo.steps);
    let n = 8.min(demo.frames.len());
    let (w, h) = (128, 128);
    let mut out = format!("P6 {} {} 255\n", w * n, h).into_bytes();
    for y in 0..h {
        for k in 0..n {
            let f = &demo.frames[k * (demo.frames.len() - 1) / (n - 1).max(1)];
            out.extend_from_slice(&f.data[y * w * 3..(y + 1) * w * 3]);
        }
    }
    if let Err(e) = std::fs::write("/tmp/strip.ppm", out) {
        eprintln!("cannot write /tmp/strip.ppm: {e}");
    }
}
