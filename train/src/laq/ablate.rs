//! `lapa laq ablate`: one command that trains a list of LAQ configurations on the same data and
//! step budget, reports each on the same probe data, and writes one comparison table
//! (`ablation.md`, `ablation.png`, `summary.json`).
//!
//! Resumable per row: a row whose report exists at its budget is not touched again; a row with a
//! checkpoint below its budget resumes from it; the table is rewritten from whatever is finished,
//! with the unfinished rows listed as such. Rows can run side by side in separate processes
//! (`--jobs`), each with its own thread count — on a 2-core machine two one-thread runs nearly
//! double the experiments where one two-thread run gains ×1.1–1.2.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use lapa_model::burn::tensor::Device;
use lapa_model::{LaqConfig, QuantizerKind};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::loader::Augment;
use super::report::{self, ReportOptions};
use super::train::{self, ActionSupervision, DeadCode, LaqTrainConfig};

/// The plan file (JSON): what every row shares, and the rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Training sources shared by every row (a row may replace them).
    pub data: Vec<PathBuf>,
    /// Labelled dataset the reports probe (sim arm data with `observation.state`).
    pub probe_data: PathBuf,
    #[serde(default = "default_spacing")]
    pub spacing_s: f64,
    /// Model preset every row starts from.
    pub preset: String,
    /// Step budget per row (a row may override it).
    pub steps: u64,
    #[serde(default)]
    pub train: TrainSettings,
    #[serde(default = "default_probe_steps")]
    pub probe_steps: usize,
    #[serde(default = "default_max_pairs")]
    pub max_pairs: usize,
    pub rows: Vec<PlanRow>,
    /// The row the next stage uses, once decided (written into summary.json).
    #[serde(default)]
    pub chosen: Option<String>,
}

fn default_spacing() -> f64 {
    0.6
}
fn default_probe_steps() -> usize {
    600
}
fn default_max_pairs() -> usize {
    20_000
}

/// Trainer settings shared by the rows (unset: LAPA's defaults, as `lapa train laq` has them).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
    pub reseed_from_batch: Option<bool>,
    pub dead_code_threshold: Option<f32>,
    pub dead_code_until: Option<u64>,
    pub log_every: Option<u64>,
    pub checkpoint_every: Option<u64>,
    pub aug_crop: Option<f32>,
    pub aug_color: Option<f32>,
}

/// One configuration of the table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlanRow {
    /// Row name: the run folder under `runs/` and the table's first column.
    pub name: String,
    #[serde(default)]
    pub quantizer: Option<QuantizerKind>,
    #[serde(default)]
    pub fsq_levels: Option<Vec<usize>>,
    #[serde(default)]
    pub tokens: Option<usize>,
    #[serde(default)]
    pub codebook_size: Option<usize>,
    /// Training sources of this row instead of the plan's (e.g. hand video only).
    #[serde(default)]
    pub data: Option<Vec<PathBuf>>,
    #[serde(default)]
    pub steps: Option<u64>,
    /// Lever (a), a departure from LAPA: a linear action head on a few labelled episodes.
    #[serde(default)]
    pub action_supervision: Option<ActionSupervision>,
    /// Lever (b): this row's augmentation instead of the plan's (the same random transform on
    /// both frames of a pair).
    #[serde(default)]
    pub aug_crop: Option<f32>,
    #[serde(default)]
    pub aug_color: Option<f32>,
    /// Continue this earlier row's finished run to a larger budget (its checkpoint is copied and
    /// resumed) instead of training from step 0; the configs must be equal but for the steps.
    #[serde(default)]
    pub continues: Option<String>,
    /// What the row tests, for the table.
    #[serde(default)]
    pub note: Option<String>,
}

impl Plan {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read the plan", path.display()))?;
        let plan: Plan = serde_json::from_slice(&bytes).with_context(|| format!("{}: not an ablation plan", path.display()))?;
        plan.validate().with_context(|| format!("{}: invalid plan", path.display()))?;
        Ok(plan)
    }

    fn validate(&self) -> Result<()> {
        if self.rows.is_empty() {
            bail!("rows: the plan has no rows");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rows.iter().enumerate() {
            let ok = !r.name.is_empty() && r.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) && r.name != "." && r.name != "..";
            if !ok {
                bail!("rows[{i}].name {:?}: use letters, digits, '-', '_' or '.'", r.name);
            }
            if !names.insert(&r.name) {
                bail!("rows[{i}].name {:?} appears twice", r.name);
            }
            if r.steps == Some(0) {
                bail!("rows[{i}] ({}): steps must be positive", r.name);
            }
            self.configs(r).with_context(|| format!("rows[{i}] ({})", r.name))?;
            if r.action_supervision.is_some() {
                // The labelled episodes are chosen outside the report's held-out fifth of data[0];
                // that keeps them out of the probe's test set only when data[0] is the probe data.
                let first = r.data.as_ref().unwrap_or(&self.data).first().cloned().unwrap_or_default();
                let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                if canon(&first) != canon(&self.probe_data) {
                    bail!(
                        "rows[{i}] ({}): action supervision labels episodes of {}, which must be the probe data {}",
                        r.name,
                        first.display(),
                        self.probe_data.display()
                    );
                }
            }
            if let Some(base) = &r.continues {
                let Some(b) = self.rows[..i].iter().find(|b| &b.name == base) else {
                    bail!("rows[{i}] ({}): continues {base:?}, which is not an earlier row", r.name);
                };
                let ((tr, mr), (tb, mb)) = (self.configs(r)?, self.configs(b)?);
                if (LaqTrainConfig { steps: 0, ..tr }, mr) != (LaqTrainConfig { steps: 0, ..tb }, mb) {
                    bail!("rows[{i}] ({}): continues {base:?} but its config differs in more than the steps", r.name);
                }
                if self.steps_of(r) <= self.steps_of(b) {
                    bail!("rows[{i}] ({}): continues {base:?} and needs more steps than its {}", r.name, self.steps_of(b));
                }
            }
        }
        if self.probe_steps == 0 || self.max_pairs == 0 {
            bail!("probe_steps and max_pairs must be positive");
        }
        if let Some(c) = &self.chosen
            && !names.contains(c)
        {
            bail!("chosen {c:?} is not a row");
        }
        if self.steps == 0 {
            bail!("steps must be positive");
        }
        Ok(())
    }

    /// A row's step budget.
    pub fn steps_of(&self, row: &PlanRow) -> u64 {
        row.steps.unwrap_or(self.steps)
    }

    /// The trainer and model configs of a row.
    pub fn configs(&self, row: &PlanRow) -> Result<(LaqTrainConfig, LaqConfig)> {
        let mut cfg = LaqTrainConfig::lapa(row.data.clone().unwrap_or_else(|| self.data.clone()), self.spacing_s);
        let t = &self.train;
        cfg.steps = self.steps_of(row);
        cfg.batch_size = t.batch.unwrap_or(cfg.batch_size);
        cfg.lr = t.lr.unwrap_or(cfg.lr);
        cfg.seed = t.seed.unwrap_or(cfg.seed);
        cfg.dead_code = DeadCode {
            threshold: t.dead_code_threshold.unwrap_or(cfg.dead_code.threshold),
            last_step: t.dead_code_until.unwrap_or(cfg.dead_code.last_step),
            from_batch: t.reseed_from_batch.unwrap_or(cfg.dead_code.from_batch),
            ..cfg.dead_code
        };
        cfg.log_every = t.log_every.unwrap_or(cfg.log_every);
        cfg.checkpoint_every = t.checkpoint_every.unwrap_or(cfg.checkpoint_every);
        let color = row.aug_color.or(t.aug_color).unwrap_or(0.0);
        cfg.augment = Augment { crop: row.aug_crop.or(t.aug_crop).unwrap_or(0.0), brightness: color, contrast: color };
        for (name, v) in [("aug_crop", cfg.augment.crop), ("aug_color", color)] {
            if !(0.0..1.0).contains(&v) {
                bail!("{name} must lie in [0, 1), got {v}");
            }
        }
        if let Some(sup) = row.action_supervision {
            sup.validate(cfg.batch_size)?;
            cfg.action_supervision = Some(sup);
        }
        if cfg.batch_size == 0 || cfg.data.is_empty() {
            bail!("batch must be positive and data non-empty");
        }
        if !(cfg.dead_code.threshold >= 0.0 && cfg.dead_code.threshold.is_finite()) {
            bail!("dead_code_threshold must be a non-negative number");
        }
        let mut m = LaqConfig::preset(&self.preset)?;
        if let Some(q) = row.quantizer {
            m.quantizer = q;
        }
        let fsq = m.quantizer == QuantizerKind::Fsq;
        if row.fsq_levels.is_some() && !fsq {
            bail!("fsq_levels needs \"quantizer\": \"fsq\"");
        }
        if row.codebook_size.is_some() && fsq {
            bail!("codebook_size is an NSVQ setting; an FSQ row's vocabulary is its fsq_levels");
        }
        if let Some(l) = &row.fsq_levels {
            m.fsq_levels = l.clone();
        }
        if let Some(t) = row.tokens {
            m.n_tokens = t;
        }
        if let Some(k) = row.codebook_size {
            m.codebook_size = k;
        }
        m.validate()?;
        Ok((cfg, m))
    }
}

/// Where a row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    NotStarted,
    /// Trained up to this step (a checkpoint), below the budget.
    Partial(u64),
    /// Trained to the budget, no report yet.
    Trained,
    /// Trained and reported at the budget.
    Done,
    /// The run folder does not match the plan's row any more (its config changed under the same
    /// name, or it was trained past a lowered budget): refused rather than mixed.
    Stale,
}

/// The row's resolved configs without the step budget, as written into its run folder.
fn fingerprint(plan: &Plan, row: &PlanRow) -> Option<serde_json::Value> {
    let (cfg, m) = plan.configs(row).ok()?;
    Some(serde_json::json!({ "train": LaqTrainConfig { steps: 0, ..cfg }, "model": m }))
}

const FINGERPRINT_FILE: &str = "plan-row.json";

/// A row's run folder.
pub fn run_dir(out: &Path, row: &PlanRow) -> PathBuf {
    out.join("runs").join(&row.name)
}

/// The report folder of a row (probe data name, as `lapa laq report` names it).
pub fn report_dir(out: &Path, row: &PlanRow) -> PathBuf {
    run_dir(out, row).join("report")
}

/// Reads a row's state from its folder. A row whose report was written at its budget is done
/// even without its checkpoint (weights and checkpoints stay out of git; reports are committed).
pub fn row_state(plan: &Plan, out: &Path, row: &PlanRow) -> RowState {
    let run = run_dir(out, row);
    let budget = plan.steps_of(row);
    if let Ok(bytes) = std::fs::read(run.join(FINGERPRINT_FILE))
        && serde_json::from_slice::<serde_json::Value>(&bytes).ok() != fingerprint(plan, row)
    {
        return RowState::Stale;
    }
    let rep = report_dir(out, row);
    let reported_at = std::fs::read_to_string(rep.join("step")).ok().and_then(|s| s.trim().parse::<u64>().ok());
    if rep.join("report.json").is_file() && reported_at == Some(budget) {
        return RowState::Done;
    }
    match train::checkpoint_step(&run) {
        None => RowState::NotStarted,
        Some(s) if s < budget => RowState::Partial(s),
        Some(s) if s == budget => RowState::Trained,
        Some(_) => RowState::Stale,
    }
}

/// Trains (or resumes) and reports one row in this process. Finished rows are left alone.
pub fn run_row(plan: &Plan, out: &Path, row: &PlanRow, device: &Device, cache_dir: &Path, quiet: bool) -> Result<RowState> {
    run_row_with(plan, out, row, device, cache_dir, quiet, false)
}

/// [`run_row`]; with `rereport`, a finished row whose weights are still here is reported again
/// (after a change to the report) without training.
pub fn run_row_with(plan: &Plan, out: &Path, row: &PlanRow, device: &Device, cache_dir: &Path, quiet: bool, rereport: bool) -> Result<RowState> {
    let run = run_dir(out, row);
    let budget = plan.steps_of(row);
    let mut state = row_state(plan, out, row);
    if rereport && state == RowState::Done {
        if !run.join(train::MODEL_DIR).join(lapa_model::artifact::WEIGHTS_FILE).is_file() {
            bail!("row {}: --rereport needs its weights in {}", row.name, run.display());
        }
        state = RowState::Trained;
    }
    match state {
        RowState::Done => return Ok(state),
        RowState::Stale => bail!(
            "row {}: {} no longer matches the plan (config changed under the same name, or trained past the budget): rename the row or move the folder away",
            row.name,
            run.display()
        ),
        RowState::NotStarted => {
            let (cfg, m) = plan.configs(row)?;
            std::fs::create_dir_all(&run)?;
            let resume = match &row.continues {
                None => false,
                Some(base) => {
                    let b = plan.rows.iter().find(|b| &b.name == base).with_context(|| format!("row {}: no row {base:?}", row.name))?;
                    let bdir = run_dir(out, b);
                    let bstate = row_state(plan, out, b);
                    if !matches!(bstate, RowState::Trained | RowState::Done) {
                        bail!("row {}: continues {base:?}, which is {bstate:?}: finish that row first", row.name);
                    }
                    let ck = train::find_checkpoint(&bdir).filter(|_| train::checkpoint_step(&bdir) == Some(plan.steps_of(b))).with_context(|| {
                        format!(
                            "row {}: continues {base:?}, whose checkpoint at step {} is not in {} (checkpoints are not committed: re-train that row on this machine)",
                            row.name,
                            plan.steps_of(b),
                            bdir.display()
                        )
                    })?;
                    // The checkpoint last: a copy cut short leaves a row that is still NotStarted.
                    for f in [train::METRICS_FILE, train::TRAIN_FILE, "curves.png"] {
                        if bdir.join(f).is_file() {
                            std::fs::copy(bdir.join(f), run.join(f)).with_context(|| format!("{}: cannot copy {f}", bdir.display()))?;
                        }
                    }
                    copy_flat(&ck, &run.join(train::CKPT_DIR))?;
                    true
                }
            };
            lapa_fs::atomic_write(&run.join(FINGERPRINT_FILE), &serde_json::to_vec_pretty(&fingerprint(plan, row))?)?;
            train::train(&cfg, &m, &run, device, cache_dir, resume, quiet).with_context(|| format!("row {}", row.name))?;
        }
        RowState::Partial(_) => {
            // The run's own train.json and model config fix everything but the budget.
            let cfg: LaqTrainConfig =
                serde_json::from_slice(&std::fs::read(run.join(train::TRAIN_FILE))?).with_context(|| format!("{}: bad train.json", run.display()))?;
            let m = lapa_model::artifact::load_laq_config(&run.join(train::MODEL_DIR))?;
            train::train(&LaqTrainConfig { steps: budget, ..cfg }, &m, &run, device, cache_dir, true, quiet).with_context(|| format!("row {}", row.name))?;
        }
        RowState::Trained => {}
    }
    let rep = report_dir(out, row);
    let opts = ReportOptions {
        run: run.clone(),
        data: plan.probe_data.clone(),
        camera: None,
        spacing_s: plan.spacing_s,
        cache_dir: cache_dir.to_path_buf(),
        out: rep.clone(),
        max_pairs: plan.max_pairs,
        probe_steps: plan.probe_steps,
        quiet,
    };
    report::run(&opts, device).with_context(|| format!("row {}: report", row.name))?;
    lapa_fs::atomic_write(&rep.join("step"), format!("{budget}\n").as_bytes())?;
    Ok(RowState::Done)
}

/// Copies the files of `from` into a fresh `to` (written as `to.new`, then renamed).
fn copy_flat(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension("new");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    for e in std::fs::read_dir(from).with_context(|| format!("{}: cannot read", from.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), tmp.join(e.file_name())).with_context(|| format!("{}: cannot copy", e.path().display()))?;
        }
    }
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// One row of `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub name: String,
    pub note: Option<String>,
    pub state: String,
    pub quantizer: QuantizerKind,
    pub tokens: usize,
    pub vocabulary: usize,
    pub steps: u64,
    /// Training sources of the row.
    pub data: Vec<PathBuf>,
    /// Lever (a), when the row uses it (a departure from LAPA).
    pub action_supervision: Option<ActionSupervision>,
    /// Lever (b): the row's augmentation (the same transform on both frames).
    pub augment: Augment,
    pub r2_tokens: Option<f64>,
    pub r2_encoder: Option<f64>,
    pub r2_frame_diff: Option<f64>,
    pub accuracy_tokens: Option<f64>,
    pub accuracy_encoder: Option<f64>,
    pub accuracy_frame_diff: Option<f64>,
    /// The same on the 9-way image-plane label.
    pub accuracy_2d_tokens: Option<f64>,
    pub accuracy_2d_encoder: Option<f64>,
    pub accuracy_2d_frame_diff: Option<f64>,
    /// Share of the vocabulary used at each token position.
    pub usage: Vec<f64>,
    /// FSQ only: per token position, the share of each digit's levels used (an FSQ token is a
    /// digit string; a digit may use all its levels while the token uses few of their products).
    pub digit_usage: Vec<Vec<f64>>,
    pub perplexity: Option<f64>,
    pub psnr: Option<f64>,
    pub psnr_copy: Option<f64>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub rows: Vec<SummaryRow>,
    pub chosen: Option<String>,
    pub finished: usize,
    pub total: usize,
}

fn read_report(out: &Path, row: &PlanRow) -> Option<serde_json::Value> {
    let bytes = std::fs::read(report_dir(out, row).join("report.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Builds the table from the rows' reports (finished rows only; the others are listed with their
/// state) and writes `ablation.md`, `ablation.png` and `summary.json` into `out`.
pub fn write_table(plan: &Plan, out: &Path) -> Result<Summary> {
    let mut rows = Vec::new();
    for row in &plan.rows {
        // Columns from the run's own config where it has one (what was trained), else the plan's.
        let m = match lapa_model::artifact::load_laq_config(&run_dir(out, row).join(train::MODEL_DIR)) {
            Ok(m) => m,
            Err(_) => plan.configs(row)?.1,
        };
        let state = row_state(plan, out, row);
        let (tcfg, _) = plan.configs(row)?;
        let rep = if state == RowState::Done { read_report(out, row) } else { None };
        let f = |probe: &str, key: &str| rep.as_ref().and_then(|r| r.get(probe)).and_then(|p| p.get(key)).and_then(serde_json::Value::as_f64);
        let usage = rep
            .as_ref()
            .and_then(|r| r.get("usage"))
            .and_then(serde_json::Value::as_array)
            .map(|u| u.iter().filter_map(|p| p.get("used").and_then(serde_json::Value::as_f64)).map(|used| used / m.vocabulary() as f64).collect())
            .unwrap_or_default();
        let digit_usage = match m.quantizer {
            QuantizerKind::Nsvq => Vec::new(),
            QuantizerKind::Fsq => rep
                .as_ref()
                .and_then(|r| r.get("usage"))
                .and_then(serde_json::Value::as_array)
                .map(|u| {
                    u.iter()
                        .filter_map(|p| p.get("counts").and_then(serde_json::Value::as_array))
                        .map(|counts| digit_shares(&m.fsq_levels, &counts.iter().map(|c| c.as_u64().unwrap_or(0)).collect::<Vec<_>>()))
                        .collect()
                })
                .unwrap_or_default(),
        };
        rows.push(SummaryRow {
            name: row.name.clone(),
            note: row.note.clone(),
            state: match state {
                RowState::Done => "done".into(),
                RowState::Trained => "trained, not reported".into(),
                RowState::Partial(s) => format!("trained to step {s}"),
                RowState::NotStarted => "not started".into(),
                RowState::Stale => "stale: run folder does not match the plan".into(),
            },
            quantizer: m.quantizer,
            tokens: m.n_tokens,
            vocabulary: m.vocabulary(),
            steps: plan.steps_of(row),
            data: tcfg.data.clone(),
            action_supervision: tcfg.action_supervision,
            augment: tcfg.augment,
            r2_tokens: f("probe_latent", "r2"),
            r2_encoder: f("probe_prequant", "r2"),
            r2_frame_diff: f("probe_frame_diff", "r2"),
            accuracy_tokens: f("probe_latent", "accuracy"),
            accuracy_encoder: f("probe_prequant", "accuracy"),
            accuracy_frame_diff: f("probe_frame_diff", "accuracy"),
            accuracy_2d_tokens: f("probe_latent_2d", "accuracy"),
            accuracy_2d_encoder: f("probe_prequant_2d", "accuracy"),
            accuracy_2d_frame_diff: f("probe_frame_diff_2d", "accuracy"),
            usage,
            digit_usage,
            perplexity: rep.as_ref().and_then(|r| r.get("perplexity")).and_then(serde_json::Value::as_f64),
            psnr: rep.as_ref().and_then(|r| r.get("psnr_recon")).and_then(serde_json::Value::as_f64),
            psnr_copy: rep.as_ref().and_then(|r| r.get("psnr_copy")).and_then(serde_json::Value::as_f64),
        });
    }
    let finished = rows.iter().filter(|r| r.state == "done").count();
    let summary = Summary { total: rows.len(), finished, rows, chosen: plan.chosen.clone() };
    std::fs::create_dir_all(out)?;
    lapa_fs::atomic_write(&out.join("summary.json"), &serde_json::to_vec_pretty(&summary)?)?;
    lapa_fs::atomic_write(&out.join("ablation.md"), markdown(plan, &summary).as_bytes())?;
    bars(&summary, &out.join("ablation.png"))?;
    Ok(summary)
}

/// Share of each digit's levels that occur among the used FSQ indices (mixed radix, first digit
/// least significant, as `Fsq::indices` builds them).
fn digit_shares(levels: &[usize], counts: &[u64]) -> Vec<f64> {
    let mut used: Vec<Vec<bool>> = levels.iter().map(|&l| vec![false; l]).collect();
    for (idx, _) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
        let mut rest = idx;
        for (d, &l) in levels.iter().enumerate() {
            used[d][rest % l] = true;
            rest /= l;
        }
    }
    used.iter().map(|u| u.iter().filter(|&&x| x).count() as f64 / u.len().max(1) as f64).collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{:.1}%", 100.0 * x))
}

fn markdown(plan: &Plan, s: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# LAQ ablation\n");
    let _ = writeln!(
        md,
        "Preset `{}`, {} steps per row unless noted, trained on {:?}; probed on `{}` (held-out episodes: every fifth). {} of {} rows finished.\n",
        plan.preset,
        plan.steps,
        plan.data,
        plan.probe_data.display(),
        s.finished,
        s.total
    );
    let _ = writeln!(
        md,
        "| row | quantizer | tokens × vocabulary | steps | state | R² tokens / encoder / frame diff | 3-D direction (7-way) tokens / encoder / frame diff | image-plane direction (9-way) tokens / encoder / frame diff | vocabulary used per position | PSNR (copy) dB |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in &s.rows {
        let mut usage = if r.usage.is_empty() { "—".into() } else { r.usage.iter().map(|u| format!("{:.0}%", 100.0 * u)).collect::<Vec<_>>().join(" / ") };
        if let Some(first) = r.digit_usage.first() {
            // Per digit, the least any position uses.
            let min: Vec<String> =
                (0..first.len()).map(|d| format!("{:.0}%", 100.0 * r.digit_usage.iter().filter_map(|p| p.get(d)).fold(1.0f64, |a, &b| a.min(b)))).collect();
            let _ = write!(usage, " (levels per digit ≥ {})", min.join(" / "));
        }
        let _ = writeln!(
            md,
            "| {}{} | {:?} | {} × {} | {} | {} | {} / {} / {} | {} / {} / {} | {} / {} / {} | {} | {} ({}) |",
            r.name,
            r.note.as_ref().map(|n| format!(" — {n}")).unwrap_or_default(),
            r.quantizer,
            r.tokens,
            r.vocabulary,
            r.steps,
            r.state,
            opt(r.r2_tokens, 3),
            opt(r.r2_encoder, 3),
            opt(r.r2_frame_diff, 3),
            pct(r.accuracy_tokens),
            pct(r.accuracy_encoder),
            pct(r.accuracy_frame_diff),
            pct(r.accuracy_2d_tokens),
            pct(r.accuracy_2d_encoder),
            pct(r.accuracy_2d_frame_diff),
            usage,
            opt(r.psnr, 2),
            opt(r.psnr_copy, 2),
        );
    }
    let _ = writeln!(
        md,
        "\nR² is the held-out joint-delta R² (pooled, original scale) of the same MLP probe on the latent tokens, on the encoder output before quantisation and on raw frame differences; the accuracies are the 7-way 3-D tip direction and the 9-way image-plane direction (still + 8), held out. `ablation.png` shows both as bars. Chosen: {}.",
        s.chosen.as_deref().unwrap_or("not yet")
    );
    md
}

/// Grouped bars of R² (tokens, encoder, frame differences) per finished row.
fn bars(s: &Summary, path: &Path) -> Result<()> {
    super::plot::register_font();
    let done: Vec<&SummaryRow> = s.rows.iter().filter(|r| r.state == "done").collect();
    let n = done.len().max(1);
    let width = (160 + 140 * n).max(720) as u32;
    let root = BitMapBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let top = done.iter().flat_map(|r| [r.r2_tokens, r.r2_encoder, r.r2_frame_diff]).flatten().fold(0.1f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("held-out joint-delta R² per row: tokens (blue), encoder before quantisation (green), frame differences (grey)", ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let colours = [RGBColor(46, 110, 190), RGBColor(120, 170, 90), RGBColor(170, 170, 170)];
    for (i, r) in done.iter().enumerate() {
        chart
            .draw_series(std::iter::once(Text::new(r.name.clone(), (i as f64 + 0.12, top * 0.97), ("sans-serif", 14))))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (k, (v, c)) in [r.r2_tokens, r.r2_encoder, r.r2_frame_diff].into_iter().zip(colours).enumerate() {
            let Some(v) = v else { continue };
            let x0 = i as f64 + 0.15 + 0.23 * k as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x0 + 0.2, v.max(0.0))], c.filled())))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    root.present().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{ActionSupervision, Plan, digit_shares};

    #[test]
    fn hostile_action_supervision_settings_are_refused_with_the_field() {
        let ok = ActionSupervision { episodes: 24, per_batch: 8, weight: 0.01 };
        assert!(ok.validate(32).is_ok());
        assert!(ActionSupervision { weight: 0.0, ..ok }.validate(32).is_ok(), "weight 0 is the control");
        for (bad, what) in [
            (ActionSupervision { per_batch: 33, ..ok }, "per_batch"),
            (ActionSupervision { per_batch: 0, ..ok }, "per_batch"),
            (ActionSupervision { episodes: 0, ..ok }, "episodes"),
            (ActionSupervision { weight: f32::NAN, ..ok }, "weight"),
            (ActionSupervision { weight: f32::INFINITY, ..ok }, "weight"),
            (ActionSupervision { weight: -1.0, ..ok }, "weight"),
        ] {
            let e = bad.validate(32).expect_err(what);
            assert!(e.to_string().contains(what), "{e}");
        }
        // A supervised row must label episodes of the probe data (else the held-out split says
        // nothing about which episodes the probe tests).
        let plan: Plan = serde_json::from_value(serde_json::json!({
            "data": ["/nonexistent/a"], "probe_data": "/nonexistent/b", "preset": "tiny", "steps": 10,
            "rows": [{"name": "s", "action_supervision": {"episodes": 2, "per_batch": 2, "weight": 0.1}}]
        }))
        .expect("plan json");
        let e = plan.validate().expect_err("labels outside the probe data");
        assert!(format!("{e:#}").contains("must be the probe data"), "{e:#}");
    }

    #[test]
    fn digit_shares_decode_fsq_indices_least_significant_first() {
        // Levels [3, 2]: index = d0 + 3·d1. Used indices 1 (d0=1, d1=0) and 4 (d0=1, d1=1).
        let mut counts = vec![0u64; 6];
        counts[1] = 5;
        counts[4] = 2;
        assert_eq!(digit_shares(&[3, 2], &counts), vec![1.0 / 3.0, 1.0]);
        // Every index used: every level of every digit.
        assert_eq!(digit_shares(&[3, 2], &[1; 6]), vec![1.0, 1.0]);
        assert_eq!(digit_shares(&[3, 2], &[0; 6]), vec![0.0, 0.0]);
    }
}
