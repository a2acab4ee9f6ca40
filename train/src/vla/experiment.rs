//! `lapa experiment lapa-table`: the paper's Language Table comparison (Table 1) in the simulator,
//! end to end and resumable per cell.
//!
//! Every cell is one `lapa` command (pretraining, finetuning on N labeled episodes, or one
//! split's closed-loop evaluation), run as a child process so that `--jobs` of them share the
//! machine one thread each. A cell is done when its output is complete (a run trained to its
//! step budget, an evaluation's report written); an interrupted training cell resumes from its
//! checkpoint. After every finished cell the table, the chart and `commands.txt` (every command
//! run, in order) are rewritten, so a partial table is always on disk with its state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::trainer::checkpoint_step;

/// The experiment's settings; `plan.json` in the output folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Policy preset of every row.
    pub config: String,
    /// Labeled arm dataset (its first N episodes finetune; all of its video pretrains).
    pub arm: PathBuf,
    /// Video-only hand dataset.
    pub hand: PathBuf,
    /// Latent labels of `arm` and `hand` (`lapa laq label`).
    pub arm_labels: PathBuf,
    pub hand_labels: PathBuf,
    /// Labeled episodes every row finetunes on.
    pub n: usize,
    /// Other N for the few-label curve (LAPA and scratch).
    pub few_label: Vec<usize>,
    pub pretrain_steps: u64,
    pub finetune_steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub chunk: usize,
    pub bins: usize,
    /// Rollouts per (row, split).
    pub rollouts: usize,
    pub splits: Vec<String>,
    /// Rows to run, from [`ROWS`].
    pub rows: Vec<String>,
    pub seed: u64,
}

/// The table's rows: (name, pretraining, description).
pub const ROWS: [(&str, &str); 7] = [
    ("scratch", "no pretraining: the same model finetuned from random weights"),
    ("lapa-arm", "latent pretraining on the arm episodes' video (no actions)"),
    ("lapa-hand", "latent pretraining on the hand's video only"),
    ("actionvla", "pretraining on the arm episodes' true actions (the upper bound)"),
    ("vpt", "an inverse-dynamics model trained on the N labeled episodes pseudo-labels the arm video with actions; the policy pretrains on them"),
    (
        "lapa-continuous",
        "ablation, a departure from LAPA: latent pretraining on the arm video regressing the LAQ's continuous pre-quantisation latent (what LAPO feeds its policy) instead of predicting its tokens",
    ),
    (
        "lapa-hand-laq",
        "the paper's human-video setting: a LAQ trained on the hand's video only (the arm labels' LAQ recipe without its action labels) labels the hand's video, the policy pretrains on it; no arm frame and no action before finetuning",
    ),
];

/// Steps of the hand-only LAQ (`lapa-hand-laq`): the LAQ ablation's budget, at which its
/// hand-only row was measured (`results/laq/ablation`, fsq-4x8555-hand). The arm labels' LAQ was
/// continued to three times that with action supervision, which hand video cannot have.
pub const HAND_LAQ_STEPS: u64 = 2000;

/// The recipe of the LAQ run behind `labels`, as `lapa train laq` flags for another dataset:
/// its quantizer and vocabulary (the labels' `laq_config`) and its optimiser and dead-code
/// settings (the run's `train.json`); its action supervision is left out.
fn laq_recipe(labels: &Path, run: &Path) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Meta {
        laq_config: lapa_model::LaqConfig,
    }
    #[derive(Deserialize)]
    struct Train {
        batch_size: usize,
        lr: f64,
        beta_1: f64,
        beta_2: f64,
        grad_clip: Option<f32>,
        seed: u64,
        camera: Option<String>,
        dead_code: DeadCode,
        augment: Augment,
    }
    #[derive(Deserialize)]
    struct DeadCode {
        enabled: bool,
        threshold: f32,
        last_step: u64,
        from_batch: bool,
    }
    #[derive(Deserialize)]
    struct Augment {
        crop: f32,
        brightness: f32,
        contrast: f32,
    }
    let mp = labels.join(crate::laq::label::LABELS_META);
    let m: Meta = serde_json::from_slice(&std::fs::read(&mp).with_context(|| format!("{}: cannot read", mp.display()))?)
        .with_context(|| format!("{}: no LAQ model config (laq_config)", mp.display()))?;
    let arm = m.laq_config;
    // The preset whose sizes the arm LAQ has (only the quantizer is set by flags).
    let preset = ["tiny", "small", "base"]
        .into_iter()
        .find(|name| {
            lapa_model::LaqConfig::preset(name).is_ok_and(|p| {
                lapa_model::LaqConfig {
                    codebook_size: arm.codebook_size,
                    n_tokens: arm.n_tokens,
                    quantizer: arm.quantizer,
                    fsq_levels: arm.fsq_levels.clone(),
                    ..p
                } == arm
            })
        })
        .ok_or_else(|| anyhow::anyhow!("{}: laq_config matches no LAQ preset (tiny, small, base) apart from its quantizer", mp.display()))?;
    let tp = run.join("train.json");
    let t: Train = serde_json::from_slice(&std::fs::read(&tp).with_context(|| format!("{}: cannot read the arm LAQ's recipe", tp.display()))?)
        .with_context(|| format!("{}: not a LAQ training record", tp.display()))?;
    if t.augment.brightness != t.augment.contrast {
        bail!("{}: brightness and contrast jitter differ; `lapa train laq` sets both with --aug-color", tp.display());
    }
    if (t.beta_1, t.beta_2) != (0.9, 0.99) {
        bail!("{}: Adam betas ({}, {}) are not `lapa train laq`'s (0.9, 0.99), which it cannot change", tp.display(), t.beta_1, t.beta_2);
    }
    let mut a: Vec<String> = vec!["--config".into(), preset.into(), "--tokens".into(), arm.n_tokens.to_string()];
    match arm.quantizer {
        lapa_model::QuantizerKind::Fsq => {
            if arm.fsq_levels.is_empty() {
                bail!("{}: an FSQ LAQ without fsq_levels", mp.display());
            }
            let levels = arm.fsq_levels.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(",");
            a.extend(["--quantizer".into(), "fsq".into(), "--fsq-levels".into(), levels]);
        }
        lapa_model::QuantizerKind::Nsvq => a.extend(["--quantizer".into(), "nsvq".into(), "--codebook-size".into(), arm.codebook_size.to_string()]),
    }
    if let Some(cam) = &t.camera {
        a.extend(["--camera".into(), cam.clone()]);
    }
    a.extend(["--batch".into(), t.batch_size.to_string(), "--lr".into(), t.lr.to_string(), "--grad-clip".into(), t.grad_clip.unwrap_or(0.0).to_string()]);
    a.extend(["--seed".into(), t.seed.to_string(), "--aug-crop".into(), t.augment.crop.to_string(), "--aug-color".into(), t.augment.brightness.to_string()]);
    if t.dead_code.enabled {
        a.extend(["--dead-code-threshold".into(), t.dead_code.threshold.to_string(), "--dead-code-until".into(), t.dead_code.last_step.to_string()]);
        if t.dead_code.from_batch {
            a.push("--reseed-from-batch".into());
        }
    } else {
        a.push("--no-dead-code".into());
    }
    Ok(a)
}

impl Plan {
    pub fn default_for(arm: PathBuf, hand: PathBuf, arm_labels: PathBuf, hand_labels: PathBuf) -> Self {
        Self {
            config: "small".into(),
            arm,
            hand,
            arm_labels,
            hand_labels,
            n: 40,
            few_label: vec![10, 20, 80],
            pretrain_steps: 3000,
            finetune_steps: 2000,
            batch: 32,
            lr: 3e-4,
            chunk: 4,
            bins: 256,
            rollouts: 100,
            splits: ["seen", "unseen-objects", "unseen-instructions", "unseen-env"].map(String::from).to_vec(),
            rows: ROWS.map(|r| r.0.to_string()).to_vec(),
            seed: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        for r in &self.rows {
            if !ROWS.iter().any(|(n, _)| n == r) {
                bail!("plan: unknown row {r:?} (rows: {})", ROWS.map(|r| r.0).join(", "));
            }
        }
        for s in &self.splits {
            if lapa_sim::Split::from_name(s).is_none() {
                bail!("plan: unknown split {s:?}");
            }
        }
        if self.splits.is_empty() || self.rows.is_empty() {
            bail!("plan: at least one row and one split");
        }
        if self.n == 0 || self.few_label.contains(&0) || self.rollouts == 0 || self.pretrain_steps == 0 || self.finetune_steps == 0 {
            bail!("plan: n, few_label values, rollouts and step budgets must be positive");
        }
        Ok(())
    }

    fn ns(&self, row: &str) -> Vec<usize> {
        let mut v = vec![self.n];
        if row == "scratch" || row == "lapa-arm" {
            v.extend(self.few_label.iter().copied().filter(|&n| n != self.n));
        }
        v.sort_unstable();
        v
    }
}

/// One command of the experiment.
#[derive(Debug, Clone)]
struct Cell {
    name: String,
    args: Vec<String>,
    /// The run it trains (training cells) or the report it writes (evaluations).
    output: PathBuf,
    steps: Option<u64>,
    after: Vec<String>,
    /// The command that continues it from its checkpoint, where appending `--resume` to `args`
    /// would not do (`lapa train laq` refuses model flags on a resume).
    resume: Option<Vec<String>>,
}

impl Cell {
    /// A pretraining, or what one waits on (the VPT row's IDM and its labelling): scheduled
    /// first, as it unblocks the most.
    fn leads_to_pretraining(&self) -> bool {
        ["pretrain-", "idm-", "label-", "laq-"].iter().any(|p| self.name.starts_with(p))
    }

    /// A training cell is done when its weights are there and it reached its budget: by its
    /// checkpoint, or (on another machine, where checkpoints are not kept) by the last row of
    /// its committed metrics.
    fn done(&self) -> bool {
        match self.steps {
            Some(s) => self.output.join("model/model.bpk").is_file() && (checkpoint_step(&self.output) == Some(s) || last_logged_step(&self.output) == Some(s)),
            None => self.output.is_file(),
        }
    }
}

/// The step of the last row of a run's metrics.csv.
fn last_logged_step(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join(crate::trainer::METRICS_FILE)).ok()?;
    text.lines().last()?.split(',').next()?.parse().ok()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The LAQ run the arm labels came from and the frame spacing they used (their
/// `latent_actions.json` names both).
fn labels_run(labels: &Path) -> Result<(PathBuf, f64)> {
    #[derive(Deserialize)]
    struct Meta {
        run: PathBuf,
        spacing_s: f64,
    }
    let p = labels.join(crate::laq::label::LABELS_META);
    let m: Meta = serde_json::from_slice(&std::fs::read(&p).with_context(|| format!("{}: cannot read the arm labels' description", p.display()))?)
        .with_context(|| format!("{}: no LAQ run and spacing_s named", p.display()))?;
    if !(m.spacing_s.is_finite() && m.spacing_s > 0.0) {
        anyhow::bail!("{}: spacing_s {} is not a positive duration", p.display(), m.spacing_s);
    }
    Ok((m.run, m.spacing_s))
}

fn cells(plan: &Plan, out: &Path) -> Result<Vec<Cell>> {
    let runs = out.join("runs");
    let common = |steps: u64, run: &Path| -> Vec<String> {
        let mut v: Vec<String> = ["--config", &plan.config, "--steps", &steps.to_string(), "--batch", &plan.batch.to_string(), "--lr", &plan.lr.to_string()]
            .map(String::from)
            .to_vec();
        v.extend(["--seed".into(), plan.seed.to_string(), "--out".into(), s(run), "--quiet".into()]);
        v
    };
    let head = || vec!["--chunk".to_string(), plan.chunk.to_string(), "--bins".into(), plan.bins.to_string()];
    let mut cells = Vec::new();
    for row in &plan.rows {
        let pre = runs.join(format!("pretrain-{row}"));
        let mut pre_after = vec![];
        let pre_cell = match row.as_str() {
            "lapa-arm" | "lapa-hand" => {
                let (d, l) = if row == "lapa-arm" { (&plan.arm, &plan.arm_labels) } else { (&plan.hand, &plan.hand_labels) };
                let mut a = vec!["train".to_string(), "latent".into(), "--data".into(), s(d), "--labels".into(), s(l)];
                a.extend(common(plan.pretrain_steps, &pre));
                Some(a)
            }
            "lapa-continuous" => {
                // The same LAQ run as the arm labels, now also writing its pre-quantisation
                // latents (the tokens come out identical: the same weights on the same frames).
                let labels = runs.join("continuous-labels");
                // The arm labels' spacing too, so the pairs are the same (t, t+H).
                let (laq, spacing) = labels_run(&plan.arm_labels)?;
                let spacing = format!("{spacing}s");
                let a = ["laq", "label", "--run", &s(&laq), "--data", &s(&plan.arm), "--spacing", &spacing, "--continuous", "--out", &s(&labels), "--quiet"]
                    .map(String::from)
                    .to_vec();
                cells.push(Cell {
                    name: "label-continuous".into(),
                    args: a,
                    output: labels.join(crate::laq::label::LABELS_META),
                    steps: None,
                    after: vec![],
                    resume: None,
                });
                pre_after.push("label-continuous".to_string());
                let mut a = vec!["train".to_string(), "latent".into(), "--continuous".into(), "--data".into(), s(&plan.arm), "--labels".into(), s(&labels)];
                a.extend(common(plan.pretrain_steps, &pre));
                Some(a)
            }
            "lapa-hand-laq" => {
                // A LAQ of the hand's video alone, its labels of that video, then pretraining.
                let (arm_laq, spacing) = labels_run(&plan.arm_labels)?;
                let laq = runs.join("laq-hand");
                let spacing = format!("{spacing}s");
                let mut a = vec!["train".to_string(), "laq".into(), "--data".into(), s(&plan.hand), "--spacing".into(), spacing.clone()];
                a.extend(laq_recipe(&plan.arm_labels, &arm_laq)?);
                a.extend(["--steps".into(), HAND_LAQ_STEPS.to_string(), "--out".into(), s(&laq), "--quiet".into()]);
                let resume = ["train", "laq", "--out", &s(&laq), "--resume", "--steps", &HAND_LAQ_STEPS.to_string(), "--quiet"].map(String::from).to_vec();
                cells.push(Cell { name: "laq-hand".into(), args: a, output: laq.clone(), steps: Some(HAND_LAQ_STEPS), after: vec![], resume: Some(resume) });
                let labels = runs.join("hand-laq-labels");
                let a = ["laq", "label", "--run", &s(&laq), "--data", &s(&plan.hand), "--spacing", &spacing, "--out", &s(&labels), "--quiet"]
                    .map(String::from)
                    .to_vec();
                cells.push(Cell {
                    name: "label-hand-laq".into(),
                    args: a,
                    output: labels.join(crate::laq::label::LABELS_META),
                    steps: None,
                    after: vec!["laq-hand".into()],
                    resume: None,
                });
                pre_after.push("label-hand-laq".to_string());
                let mut a = vec!["train".to_string(), "latent".into(), "--data".into(), s(&plan.hand), "--labels".into(), s(&labels)];
                a.extend(common(plan.pretrain_steps, &pre));
                Some(a)
            }
            "actionvla" => {
                let mut a = vec!["train".to_string(), "action".into(), "--data".into(), s(&plan.arm)];
                a.extend(head());
                a.extend(common(plan.pretrain_steps, &pre));
                Some(a)
            }
            "vpt" => {
                // The inverse-dynamics model on the same N labeled episodes, then its labels of
                // every arm episode's video, then pretraining on them.
                let idm = runs.join(format!("idm-n{}", plan.n));
                let mut a = vec!["train".to_string(), "idm".into(), "--data".into(), s(&plan.arm), "--episodes".into(), plan.n.to_string()];
                a.extend(["--bins".into(), plan.bins.to_string()]);
                a.extend(common(plan.finetune_steps, &idm));
                cells.push(Cell {
                    name: format!("idm-n{}", plan.n),
                    args: a,
                    output: idm.clone(),
                    steps: Some(plan.finetune_steps),
                    after: vec![],
                    resume: None,
                });
                let labels = runs.join("vpt-labels");
                let a = ["vpt", "label", "--idm", &s(&idm), "--data", &s(&plan.arm), "--out", &s(&labels), "--quiet"].map(String::from).to_vec();
                cells.push(Cell {
                    name: "label-vpt".into(),
                    args: a,
                    output: labels.join(super::vpt::PSEUDO_META),
                    steps: None,
                    after: vec![format!("idm-n{}", plan.n)],
                    resume: None,
                });
                pre_after.push("label-vpt".to_string());
                let mut a = vec!["train".to_string(), "action".into(), "--data".into(), s(&plan.arm), "--action-labels".into(), s(&labels)];
                a.extend(head());
                a.extend(common(plan.pretrain_steps, &pre));
                Some(a)
            }
            _ => None,
        };
        if let Some(args) = pre_cell {
            cells.push(Cell { name: format!("pretrain-{row}"), args, output: pre.clone(), steps: Some(plan.pretrain_steps), after: pre_after, resume: None });
        }
        for n in plan.ns(row) {
            let ft = runs.join(format!("ft-{row}-n{n}"));
            let init = if row == "scratch" { "none".to_string() } else { s(&pre) };
            let mut a = vec!["train".to_string(), "finetune".into(), "--init".into(), init, "--data".into(), s(&plan.arm), "--episodes".into(), n.to_string()];
            a.extend(head());
            a.extend(common(plan.finetune_steps, &ft));
            let after = if row == "scratch" { vec![] } else { vec![format!("pretrain-{row}")] };
            cells.push(Cell { name: format!("ft-{row}-n{n}"), args: a, output: ft.clone(), steps: Some(plan.finetune_steps), after, resume: None });
            let splits: Vec<&String> = if n == plan.n { plan.splits.iter().collect() } else { plan.splits.iter().take(1).collect() };
            for split in splits {
                let report = ft.join("eval").join(format!("{split}.json"));
                let a =
                    ["eval", "--run", &s(&ft), "--split", split, "--episodes", &plan.rollouts.to_string(), "--out", &s(&report), "--videos", "2", "--quiet"]
                        .map(String::from)
                        .to_vec();
                cells.push(Cell {
                    name: format!("eval-{row}-n{n}-{split}"),
                    args: a,
                    output: report,
                    steps: None,
                    after: vec![format!("ft-{row}-n{n}")],
                    resume: None,
                });
            }
        }
    }
    // The main table (every row at N) before the few-label curve, so a partial run has whole rows.
    let main = format!("-n{}", plan.n);
    cells.sort_by_key(|c| {
        if c.leads_to_pretraining() {
            0
        } else if c.name.ends_with(&main) || c.name.contains(&format!("{main}-")) {
            1
        } else {
            2
        }
    });
    Ok(cells)
}

/// A cell whose every dependent is done (a finetune evaluated on all its splits, the labels a
/// finished pretraining read) is not run again: weights, checkpoints and labels are not all kept
/// in the repository, the results are. Repeated until nothing changes, so it runs back along
/// chains (IDM → its labels → pretraining → finetune → evaluations).
fn skip_behind_done(all: &[Cell], done: &mut BTreeMap<String, bool>) {
    loop {
        let newly: Vec<String> = all
            .iter()
            .filter(|c| !done[&c.name])
            .filter(|c| {
                let mut dependents = all.iter().filter(|d| d.after.contains(&c.name)).peekable();
                dependents.peek().is_some() && dependents.all(|d| done[&d.name])
            })
            .map(|c| c.name.clone())
            .collect();
        if newly.is_empty() {
            return;
        }
        for n in newly {
            done.insert(n, true);
        }
    }
}

/// Runs (or continues) the experiment in `out` with `jobs` cells at a time, each on `threads`
/// threads.
pub fn run(plan: &Plan, out: &Path, jobs: usize, threads: usize, quiet: bool) -> Result<()> {
    plan.validate()?;
    std::fs::create_dir_all(out)?;
    let plan_path = out.join("plan.json");
    if plan_path.is_file() {
        let old: Plan = serde_json::from_slice(&std::fs::read(&plan_path)?).with_context(|| format!("{}: not a plan", plan_path.display()))?;
        // A plan may gain rows (a later sitting adds a baseline); every other setting must match.
        let grows = old.rows.iter().all(|r| plan.rows.contains(r)) && Plan { rows: plan.rows.clone(), ..old.clone() } == *plan;
        if !grows {
            bail!("{}: the experiment in this folder has another plan; use another --out or delete it", plan_path.display());
        }
    }
    lapa_fs::atomic_write(&plan_path, &serde_json::to_vec_pretty(plan)?)?;
    let exe = std::env::current_exe().context("cannot find the lapa binary")?;
    let all = cells(plan, out)?;
    let mut done: BTreeMap<String, bool> = all.iter().map(|c| (c.name.clone(), c.done())).collect();
    skip_behind_done(&all, &mut done);
    let mut running: Vec<(Cell, Child, Instant)> = Vec::new();
    let log_path = out.join("commands.txt");
    let times_path = out.join("cell_seconds.json");
    let mut times: BTreeMap<String, f64> = std::fs::read(&times_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    write_table(plan, out, &times)?;
    loop {
        // Reap finished cells.
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].1.try_wait()? {
                let (cell, _, t0) = running.swap_remove(i);
                if !status.success() || !cell.done() {
                    // Stop the other cells too: a second run of the experiment must not find
                    // a trainer still writing into its folders.
                    for (_, child, _) in &mut running {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    bail!("{} failed ({status}); its log: {}", cell.name, out.join("logs").join(format!("{}.log", cell.name)).display());
                }
                *times.entry(cell.name.clone()).or_default() += t0.elapsed().as_secs_f64() * threads as f64;
                lapa_fs::atomic_write(&times_path, &serde_json::to_vec_pretty(&times)?)?;
                done.insert(cell.name.clone(), true);
                if !quiet {
                    println!("done {} ({:.0} s)", cell.name, t0.elapsed().as_secs_f64());
                }
                write_table(plan, out, &times)?;
            } else {
                i += 1;
            }
        }
        // Pretraining first (it unblocks the most), then evaluations (quick, and they fill the
        // table), then finetuning.
        let mut ready: Vec<Cell> =
            all.iter().filter(|c| !done[&c.name] && !running.iter().any(|r| r.0.name == c.name) && c.after.iter().all(|a| done[a])).cloned().collect();
        ready.sort_by_key(|c| {
            if c.leads_to_pretraining() {
                0
            } else if c.name.starts_with("eval") {
                1
            } else {
                2
            }
        });
        if ready.is_empty() && running.is_empty() {
            break;
        }
        for cell in ready.into_iter().take(jobs.saturating_sub(running.len())) {
            let args = if cell.steps.is_some() && checkpoint_step(&cell.output).is_some() {
                cell.resume.clone().unwrap_or_else(|| cell.args.iter().cloned().chain(["--resume".to_string()]).collect())
            } else {
                cell.args.clone()
            };
            let line = format!("lapa {}\n", args.join(" "));
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
            std::io::Write::write_all(&mut f, line.as_bytes())?;
            std::fs::create_dir_all(out.join("logs"))?;
            let log = std::fs::File::create(out.join("logs").join(format!("{}.log", cell.name)))?;
            if !quiet {
                print!("start {line}");
            }
            let child = Command::new(&exe)
                .args(&args)
                .env("RAYON_NUM_THREADS", threads.to_string())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("cannot start {}", cell.name))?;
            running.push((cell, child, Instant::now()));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    write_table(plan, out, &times)?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct CellResult {
    successes: usize,
    rollouts: usize,
    rate: f64,
    ci95: [f64; 2],
}

fn read_eval(path: &Path) -> Option<CellResult> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let t = v.get("total")?;
    Some(CellResult {
        successes: t.get("successes")?.as_u64()? as usize,
        rollouts: t.get("rollouts")?.as_u64()? as usize,
        rate: t.get("rate")?.as_f64()?,
        ci95: [t.get("ci95")?.get(0)?.as_f64()?, t.get("ci95")?.get(1)?.as_f64()?],
    })
}

/// Writes `table.md`, `table.json` and `chart.png` from the evaluations done so far.
pub fn write_table(plan: &Plan, out: &Path, times: &BTreeMap<String, f64>) -> Result<()> {
    let runs = out.join("runs");
    let cell = |row: &str, n: usize, split: &str| read_eval(&runs.join(format!("ft-{row}-n{n}")).join("eval").join(format!("{split}.json")));
    let mut md = format!(
        "# LAPA table (simulator), N = {} labeled arm episodes, `{}` policy\n\nSuccess rate (95% Wilson interval; successes/rollouts). `…` = not run yet.\n\n| row | {} |\n|---|{}\n",
        plan.n,
        plan.config,
        plan.splits.join(" | "),
        "---|".repeat(plan.splits.len())
    );
    let mut rows_json = BTreeMap::new();
    for row in &plan.rows {
        md += &format!("| {row} |");
        let mut per = BTreeMap::new();
        for split in &plan.splits {
            match cell(row, plan.n, split) {
                Some(c) => {
                    md += &format!(" {:.1}% [{:.1}, {:.1}] ({}/{}) |", 100.0 * c.rate, 100.0 * c.ci95[0], 100.0 * c.ci95[1], c.successes, c.rollouts);
                    per.insert(split.clone(), Some(c));
                }
                None => {
                    md += " … |";
                    per.insert(split.clone(), None);
                }
            }
        }
        md += "\n";
        rows_json.insert(row.clone(), per);
    }
    let mut curve = BTreeMap::new();
    md += "\n## Few-label curve (seen split)\n\n| N | scratch | lapa-arm |\n|---|---|---|\n";
    let mut ns: Vec<usize> = plan.few_label.iter().copied().chain([plan.n]).collect();
    ns.sort_unstable();
    ns.dedup();
    for n in &ns {
        let a = cell("scratch", *n, &plan.splits[0]);
        let b = cell("lapa-arm", *n, &plan.splits[0]);
        let f = |c: &Option<CellResult>| c.as_ref().map_or("…".to_string(), |c| format!("{:.1}% ({}/{})", 100.0 * c.rate, c.successes, c.rollouts));
        md += &format!("| {n} | {} | {} |\n", f(&a), f(&b));
        curve.insert(n.to_string(), serde_json::json!({ "scratch": a, "lapa-arm": b }));
    }
    let cpu: f64 = times.values().sum();
    md += &format!("\nCompute so far: {:.1} CPU-hours (wall time × threads of each finished cell; see cell_seconds.json).\n", cpu / 3600.0);
    md += "\nRows: ";
    md += &ROWS.iter().map(|(n, d)| format!("**{n}**: {d}")).collect::<Vec<_>>().join("; ");
    md += ".\n";
    lapa_fs::atomic_write(&out.join("table.md"), md.as_bytes())?;
    let json = serde_json::json!({ "n": plan.n, "config": plan.config, "splits": plan.splits, "rows": rows_json, "few_label": curve, "cpu_seconds": cpu });
    lapa_fs::atomic_write(&out.join("table.json"), &serde_json::to_vec_pretty(&json)?)?;
    chart(plan, out, &|row, split| cell(row, plan.n, split))
}

fn chart(plan: &Plan, out: &Path, cell: &dyn Fn(&str, &str) -> Option<CellResult>) -> Result<()> {
    use plotters::prelude::*;
    crate::laq::plot::register_font();
    let png = out.join("chart.png");
    let e = |x: &dyn std::fmt::Display| anyhow::anyhow!("{}: plotting: {x}", png.display());
    let root = BitMapBackend::new(&png, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let groups = plan.splits.len();
    let per = plan.rows.len();
    let mut c = ChartBuilder::on(&root)
        .caption(format!("closed-loop success, N = {} labeled episodes", plan.n), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..groups as f64, 0f64..100f64)
        .map_err(|x| e(&x))?;
    let splits = plan.splits.clone();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(groups + 1)
        .x_label_formatter(&|x| splits.get(x.floor() as usize).cloned().unwrap_or_default())
        .y_desc("success %")
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|x| e(&x))?;
    let colours = [
        RGBColor(120, 120, 120),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
    ];
    for (ri, row) in plan.rows.iter().enumerate() {
        let col = colours[ri % colours.len()];
        let w = 0.8 / per as f64;
        let bars: Vec<(f64, f64, f64, f64)> = plan
            .splits
            .iter()
            .enumerate()
            .filter_map(|(si, split)| cell(row, split).map(|r| (si as f64 + 0.1 + ri as f64 * w, 100.0 * r.rate, 100.0 * r.ci95[0], 100.0 * r.ci95[1])))
            .collect();
        c.draw_series(bars.iter().map(|&(x, y, _, _)| Rectangle::new([(x, 0.0), (x + w * 0.9, y)], col.filled())))
            .map_err(|x| e(&x))?
            .label(row.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled()));
        c.draw_series(bars.iter().map(|&(x, _, lo, hi)| PathElement::new(vec![(x + w * 0.45, lo), (x + w * 0.45, hi)], BLACK))).map_err(|x| e(&x))?;
    }
    c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 12)).draw().map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_continuous_row_labels_with_the_arm_labels_run_and_spacing_and_bad_ones_are_named() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let meta = dir.path().join(crate::laq::label::LABELS_META);
        std::fs::write(&meta, r#"{"run": "runs/laq-a", "spacing_s": 0.4, "n_tokens": 4}"#)?;
        assert_eq!(labels_run(dir.path())?, (PathBuf::from("runs/laq-a"), 0.4));
        for bad in [r#"{"run": "runs/laq-a", "spacing_s": 0.0}"#, r#"{"run": "runs/laq-a", "spacing_s": -1}"#, r#"{"run": "runs/laq-a"}"#, "not json"] {
            std::fs::write(&meta, bad)?;
            let Err(e) = labels_run(dir.path()) else { anyhow::bail!("{bad}: accepted") };
            assert!(format!("{e:#}").contains(crate::laq::label::LABELS_META), "{bad}: {e:#}");
        }
        let Err(e) = labels_run(&dir.path().join("missing")) else { anyhow::bail!("a missing folder was accepted") };
        assert!(format!("{e:#}").contains("cannot read the arm labels"), "{e:#}");
        Ok(())
    }

    fn arm_laq(dir: &Path, augment: &str) -> Result<PathBuf> {
        let run = dir.join("laq-arm");
        std::fs::create_dir_all(&run)?;
        std::fs::write(
            run.join("train.json"),
            format!(
                r#"{{"data": ["data/sim-arm"], "camera": null, "spacing_s": 0.6, "batch_size": 24, "steps": 6000, "lr": 0.002, "beta_1": 0.9, "beta_2": 0.99,
                "grad_clip": 0.7, "seed": 5, "dead_code": {{"enabled": true, "threshold": 1.5, "noise": 0.01, "last_step": 90000, "from_batch": true}},
                "augment": {augment}, "action_supervision": {{"episodes": 24, "per_batch": 8, "weight": 0.01}}}}"#
            ),
        )?;
        let labels = dir.join("arm-labels");
        std::fs::create_dir_all(&labels)?;
        std::fs::write(
            labels.join(crate::laq::label::LABELS_META),
            format!(
                r#"{{"run": "{}", "spacing_s": 0.6, "n_tokens": 4, "laq_config": {}}}"#,
                run.display(),
                serde_json::to_string(&lapa_model::LaqConfig {
                    n_tokens: 4,
                    quantizer: lapa_model::QuantizerKind::Fsq,
                    fsq_levels: vec![8, 5, 5, 5],
                    ..lapa_model::LaqConfig::small()
                })?
            ),
        )?;
        Ok(labels)
    }

    #[test]
    fn the_hand_laq_row_trains_a_laq_on_hand_video_with_the_arm_recipe_but_no_actions() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let labels = arm_laq(dir.path(), r#"{"crop": 0.0, "brightness": 0.0, "contrast": 0.0}"#)?;
        let mut plan = Plan::default_for("arm".into(), "hand".into(), labels.clone(), "hand-labels".into());
        plan.rows = vec!["lapa-hand-laq".into()];
        plan.validate()?;
        let out = dir.path().join("table");
        let all = cells(&plan, &out)?;
        let by = |n: &str| {
            all.iter().find(|c| c.name == n).cloned().ok_or_else(|| anyhow::anyhow!("no cell {n}: {:?}", all.iter().map(|c| &c.name).collect::<Vec<_>>()))
        };
        let laq = by("laq-hand")?;
        let line = laq.args.join(" ");
        let run = out.join("runs/laq-hand");
        let want = format!(
            "train laq --data hand --spacing 0.6s --config small --tokens 4 --quantizer fsq --fsq-levels 8,5,5,5 --batch 24 --lr 0.002 --grad-clip 0.7 \
             --seed 5 --aug-crop 0 --aug-color 0 --dead-code-threshold 1.5 --dead-code-until 90000 --reseed-from-batch --steps 2000 --out {} --quiet",
            run.display()
        );
        assert_eq!(line, want, "the arm LAQ's recipe, on hand video, without its action supervision");
        // Resumed from its checkpoint without the model flags `lapa train laq --resume` refuses.
        let resume = laq.resume.clone().ok_or_else(|| anyhow::anyhow!("no resume command"))?.join(" ");
        assert_eq!(resume, format!("train laq --out {} --resume --steps 2000 --quiet", run.display()));
        assert_eq!(laq.steps, Some(HAND_LAQ_STEPS));
        let label = by("label-hand-laq")?;
        assert_eq!(label.after, vec!["laq-hand".to_string()]);
        assert!(label.args.join(" ").contains(&format!("laq label --run {} --data hand", out.join("runs/laq-hand").display())));
        let pre = by("pretrain-lapa-hand-laq")?;
        assert_eq!(pre.after, vec!["label-hand-laq".to_string()]);
        assert!(pre.args.join(" ").contains(&format!("train latent --data hand --labels {}", out.join("runs/hand-laq-labels").display())));
        assert_eq!(by("ft-lapa-hand-laq-n40")?.after, vec!["pretrain-lapa-hand-laq".to_string()]);
        // A recipe this row cannot pass on is refused by name.
        let labels = arm_laq(dir.path(), r#"{"crop": 0.1, "brightness": 0.1, "contrast": 0.2}"#)?;
        plan.arm_labels = labels;
        let Err(e) = cells(&plan, &out) else { anyhow::bail!("differing colour jitters were accepted") };
        assert!(format!("{e:#}").contains("train.json"), "{e:#}");
        // An arm LAQ of no preset's size, and a truncated record, are named too.
        let labels = arm_laq(dir.path(), r#"{"crop": 0.0, "brightness": 0.0, "contrast": 0.0}"#)?;
        let meta = labels.join(crate::laq::label::LABELS_META);
        let text = std::fs::read_to_string(&meta)?.replace("\"dim\":128", "\"dim\":96");
        assert!(text.contains("\"dim\":96"), "{text}");
        std::fs::write(&meta, text)?;
        plan.arm_labels = labels.clone();
        let Err(e) = cells(&plan, &out) else { anyhow::bail!("an LAQ of no preset's size was accepted") };
        assert!(format!("{e:#}").contains("matches no LAQ preset") && format!("{e:#}").contains(crate::laq::label::LABELS_META), "{e:#}");
        arm_laq(dir.path(), r#"{"crop": 0.0, "brightness": 0.0, "contrast": 0.0}"#)?;
        std::fs::write(dir.path().join("laq-arm/train.json"), r#"{"batch_size": 32}"#)?;
        let Err(e) = cells(&plan, &out) else { anyhow::bail!("a truncated train.json was accepted") };
        assert!(format!("{e:#}").contains("not a LAQ training record"), "{e:#}");
        Ok(())
    }

    #[test]
    fn cells_behind_done_ones_are_skipped_back_along_the_chain_and_no_further() {
        let cell = |name: &str, after: &[&str]| Cell {
            name: name.into(),
            args: vec![],
            output: PathBuf::from("/nonexistent"),
            steps: None,
            after: after.iter().map(|a| a.to_string()).collect(),
            resume: None,
        };
        // laq → labels → pretrain → ft → eval-a, eval-b; an unrelated cell with no dependents.
        let all = vec![
            cell("laq", &[]),
            cell("labels", &["laq"]),
            cell("pretrain", &["labels"]),
            cell("ft", &["pretrain"]),
            cell("eval-a", &["ft"]),
            cell("eval-b", &["ft"]),
            cell("lonely", &[]),
        ];
        let fresh = || all.iter().map(|c| (c.name.clone(), false)).collect::<BTreeMap<_, _>>();
        let mut done = fresh();
        done.insert("eval-a".into(), true);
        skip_behind_done(&all, &mut done);
        assert!(done.iter().filter(|(n, _)| *n != "eval-a").all(|(_, d)| !d), "one evaluation left: nothing skipped: {done:?}");
        done.insert("eval-b".into(), true);
        skip_behind_done(&all, &mut done);
        assert!(["laq", "labels", "pretrain", "ft"].iter().all(|n| done[*n]), "{done:?}");
        assert!(!done["lonely"], "a cell with no dependents is never skipped");
    }
}
