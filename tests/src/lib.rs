//! Cross-crate integration tests live in `tests/tests/`; this library holds their shared fixtures.

use lapa_boards::SO101;
use lapa_dataset::{CameraSpec, DatasetSpec, DatasetWriter, EpisodeInput, VideoCodec, WrittenDataset};
use lapa_sim::{Demo, Embodiment, Env, EnvConfig, Split, TaskFamily, run_expert};
use std::path::Path;

/// Records `n` expert episodes of `emb` into a new dataset at `root`; returns the demos written.
pub fn record(root: &Path, emb: Embodiment, n: usize, codec: VideoCodec) -> (WrittenDataset, Vec<Demo>) {
    let names: Vec<String> = SO101.names().iter().map(|j| format!("{j}.pos")).collect();
    let spec = DatasetSpec {
        fps: 10,
        robot_type: "so101_follower".into(),
        cameras: vec![CameraSpec { key: "observation.images.front".into(), width: 64, height: 64 }],
        state_names: (emb == Embodiment::Arm).then(|| names.clone()),
        action_names: (emb == Embodiment::Arm).then(|| names.clone()),
        codec,
    };
    let mut w = DatasetWriter::create(root, spec).expect("create dataset");
    let mut env = Env::new(EnvConfig::default());
    let mut demos = Vec::new();
    let mut seed = 0;
    while demos.len() < n {
        let d = run_expert(&mut env, seed, emb, Some(TaskFamily::ALL[demos.len() % 6]), Split::Seen, true);
        seed += 1;
        if !d.success {
            continue;
        }
        let images = d.image_bytes();
        let rows = d.state_action_rows();
        let (state, action) = (rows.as_ref().map(|(s, _)| s.as_slice()), rows.as_ref().map(|(_, a)| a.as_slice()));
        w.add_episode(&EpisodeInput { task: &d.instruction, images: &[&images], state, action }).expect("add episode");
        demos.push(d);
    }
    (w.finish().expect("finish dataset"), demos)
}
