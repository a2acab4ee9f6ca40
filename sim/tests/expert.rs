//! Scripted experts must succeed on ≥ 95% of episodes for every task family and both embodiments.

use lapa_sim::{Embodiment, Env, EnvConfig, Split, TaskFamily, run_expert};

const EPISODES: u64 = 100;

fn rate(emb: Embodiment, family: TaskFamily, split: Split) -> (f32, Vec<u64>) {
    let mut env = Env::new(EnvConfig::default());
    let mut failed = Vec::new();
    for seed in 0..EPISODES {
        let demo = run_expert(&mut env, 1000 + seed, emb, Some(family), split, false);
        if !demo.success {
            failed.push(1000 + seed);
        }
    }
    (1.0 - failed.len() as f32 / EPISODES as f32, failed)
}

fn check(emb: Embodiment) {
    let mut report = Vec::new();
    for family in TaskFamily::ALL {
        let (r, failed) = rate(emb, family, Split::Seen);
        eprintln!("{:5} {:14} success {:5.1}%  failed seeds {:?}", emb.name(), family.name(), r * 100.0, failed);
        report.push((family, r));
    }
    for (family, r) in report {
        assert!(r >= 0.95, "{} expert on {} succeeded {:.1}% < 95%", emb.name(), family.name(), r * 100.0);
    }
}

#[test]
fn arm_expert_succeeds_on_every_family() {
    check(Embodiment::Arm);
}

#[test]
fn hand_expert_succeeds_on_every_family() {
    check(Embodiment::Hand);
}

#[test]
fn experts_succeed_on_every_split() {
    let mut env = Env::new(EnvConfig::default());
    for split in Split::ALL {
        for emb in [Embodiment::Arm, Embodiment::Hand] {
            let ok = (0..12u64).filter(|&s| run_expert(&mut env, 50 + s, emb, None, split, false).success).count();
            assert!(ok >= 11, "{} on split {}: {ok}/12", emb.name(), split.name());
        }
    }
}
