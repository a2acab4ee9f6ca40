//! The one training loop every stage shares (LAQ, latent pretraining, finetuning, true-action
//! pretraining, the VPT inverse-dynamics model).
//!
//! A stage ([`Stage`]) owns its model and optimiser and knows how to take one step on a batch,
//! what to log and what to checkpoint. The trainer owns everything else:
//! - a deterministic background [`Loader`]: batch `k` is a pure function of the stage's seed and
//!   `k`, built by worker threads ahead of the step, so `--resume` continues exactly where an
//!   uninterrupted run would be;
//! - the run folder: `train.json` (what the stage saves), `metrics.csv` (one row per log
//!   window, truncated back to the checkpoint on resume), curves PNG, the artifact folder the
//!   next stage reads, and checkpoints swapped atomically (`checkpoint.new` written in full,
//!   then renamed over `checkpoint`; a crash leaves either the old or the new one complete);
//! - the progress bar;
//! - data parallelism over several devices ([`Replicas`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use lapa_model::burn::module::Module;
use lapa_model::burn::optim::{GradientsAccumulator, GradientsParams};
use lapa_model::burn::tensor::Tensor;
use serde_json::Value;

pub const TRAIN_FILE: &str = "train.json";
pub const MODEL_DIR: &str = "model";
pub const CKPT_DIR: &str = "checkpoint";
pub const METRICS_FILE: &str = "metrics.csv";
const STATE_FILE: &str = "state.json";

/// Data parallelism: one replica of the model per device. Each step's batch is cut into one
/// shard per device; every replica (the model forked onto its device, a fresh autodiff leaf per
/// parameter) computes its shard's loss and gradient on its own thread; the gradients move to
/// the first device and are summed there, and the optimiser steps once on the first device's
/// model, which the next step forks again. Each shard's loss is weighted by its share of the
/// batch, so the summed gradient is the whole batch's (up to summation order): two replicas of
/// batch 32 train like one of batch 32, not like batch 16.
///
/// This is burn's own data-parallel recipe (`Module::fork`, `GradientsParams::to_device`,
/// `GradientsAccumulator`), the one its `burn-train` learner runs on several devices. Several
/// entries may name the same device (`cpu,cpu`: burn's flex backend has one CPU device, so the
/// replicas then share it and gain only what their threads overlap).
#[derive(Debug, Clone)]
pub struct Replicas {
    devices: Vec<lapa_model::burn::tensor::Device>,
}

impl Replicas {
    /// `devices`: autodiff devices, the first one holds the model and the optimiser.
    pub fn new(devices: Vec<lapa_model::burn::tensor::Device>) -> Result<Self> {
        if devices.is_empty() {
            bail!("at least one device is needed");
        }
        Ok(Self { devices })
    }

    pub fn main(&self) -> &lapa_model::burn::tensor::Device {
        &self.devices[0]
    }

    /// Sizes of the shards a batch of `n` is cut into: as even as possible, no empty shard
    /// (a batch smaller than the replica count uses fewer replicas).
    pub fn shard_sizes(&self, n: usize) -> Vec<usize> {
        let k = self.devices.len().min(n).max(1);
        (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
    }

    /// The summed gradient of `shards` (at most one per device) on the main device, and what
    /// `shard_loss` returned beside each shard's loss. `shard_loss(replica, shard, device)` runs
    /// the replica's forward pass and returns its loss already weighted by the shard's share of
    /// the batch. One shard runs on the calling thread without forking.
    pub fn gradients<M, S, T, F>(&self, model: &M, shards: Vec<S>, shard_loss: F) -> Result<(GradientsParams, Vec<T>)>
    where
        M: Module + Clone + Send,
        S: Send,
        T: Send,
        F: Fn(&M, S, &lapa_model::burn::tensor::Device) -> Result<(Tensor<1>, T)> + Sync,
    {
        if shards.is_empty() || shards.len() > self.devices.len() {
            bail!("{} shards for {} devices", shards.len(), self.devices.len());
        }
        if shards.len() == 1 {
            let shard = shards.into_iter().next().expect("one shard");
            let (loss, out) = shard_loss(model, shard, self.main())?;
            return Ok((GradientsParams::from_grads(loss.backward(), model), vec![out]));
        }
        let main = self.main();
        let shard_loss = &shard_loss;
        let results: Vec<Result<(GradientsParams, T)>> = std::thread::scope(|s| {
            let handles: Vec<_> = shards
                .into_iter()
                .zip(&self.devices)
                .map(|(shard, device)| {
                    let replica = model.clone();
                    s.spawn(move || {
                        let replica = replica.fork(device);
                        let (loss, out) = shard_loss(&replica, shard, device)?;
                        let grads = GradientsParams::from_grads(loss.backward(), &replica).to_device(main, &replica);
                        Ok((grads, out))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a replica's thread panicked")))).collect()
        });
        let mut acc = GradientsAccumulator::<M>::new();
        let mut outs = Vec::with_capacity(results.len());
        for r in results {
            let (grads, out) = r?;
            acc.accumulate(model, grads);
            outs.push(out);
        }
        Ok((acc.grads(), outs))
    }
}

/// Worker threads building batches `start..end` ahead of the trainer, in step order.
#[derive(Debug)]
pub struct Loader<B> {
    rxs: Vec<Receiver<B>>,
    next: u64,
    handles: Vec<JoinHandle<()>>,
}

impl<B: Send + 'static> Loader<B> {
    /// `make(step)` must depend only on `step` (and what it captured), never on call order.
    pub fn start(make: Arc<dyn Fn(u64) -> B + Send + Sync>, start: u64, end: u64, workers: usize, prefetch: usize) -> Self {
        let workers = workers.max(1);
        let mut rxs = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers as u64 {
            let (tx, rx): (SyncSender<B>, Receiver<B>) = sync_channel(prefetch.max(1));
            let make = make.clone();
            handles.push(std::thread::spawn(move || {
                let mut step = start + w;
                while step < end {
                    if tx.send(make(step)).is_err() {
                        return;
                    }
                    step += workers as u64;
                }
            }));
            rxs.push(rx);
        }
        Self { rxs, next: start, handles }
    }

    /// The next batch in step order; `None` past the end (or if a worker panicked).
    pub fn next_batch(&mut self) -> Option<B> {
        let w = (self.next % self.rxs.len() as u64) as usize;
        let b = self.rxs[w].recv().ok()?;
        self.next += 1;
        Some(b)
    }
}

impl<B> Drop for Loader<B> {
    fn drop(&mut self) {
        self.rxs.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// A training stage, as the trainer drives it.
pub trait Stage {
    type Batch: Send + 'static;

    /// The metrics CSV header (the first column is `step`).
    fn header(&self) -> String;

    /// One optimisation step on `batch`, the `step`-th of the run (0-based).
    fn step(&mut self, step: u64, batch: Self::Batch) -> Result<()>;

    /// At the end of a log window: the CSV row after the step column (no newline) and the
    /// progress bar's message. `window` is the wall time of the window's steps, `elapsed` of
    /// the whole run (this sitting). The stage resets its window sums.
    fn log(&mut self, window_steps: u64, window: Duration, elapsed: Duration) -> (String, String);

    /// Writes the model's and optimiser's state into the fresh folder `dir`, and returns the
    /// extra state (besides the step) to keep in `state.json`.
    fn save_checkpoint(&self, dir: &Path) -> Result<Value>;

    /// Restores what [`Stage::save_checkpoint`] wrote.
    fn load_checkpoint(&mut self, dir: &Path, state: &Value) -> Result<()>;

    /// Writes the artifact folder the next stage reads (config + weights).
    fn save_artifact(&self, dir: &Path) -> Result<()>;

    /// Draws the curves from the metrics CSV.
    fn plot(&self, metrics: &Path, png: &Path) -> Result<()>;
}

/// Writes a module's weights and its optimiser's state into a checkpoint folder as
/// `{name}.bpk` and `{optim}.bpk` (the parts every stage's checkpoint holds).
pub fn save_state<M: lapa_model::burn::module::Module>(
    dir: &Path,
    name: &str,
    optim: &str,
    model: &M,
    opt: &lapa_model::burn::optim::ModuleOptimizer,
) -> Result<()> {
    let mb = model.clone().into_record().into_bytes().map_err(|e| anyhow::anyhow!("serialising {name}: {e:?}"))?;
    lapa_fs::atomic_write(&dir.join(format!("{name}.bpk")), &mb)?;
    let ob = opt.to_record().into_bytes().map_err(|e| anyhow::anyhow!("serialising {optim}: {e:?}"))?;
    lapa_fs::atomic_write(&dir.join(format!("{optim}.bpk")), &ob)?;
    Ok(())
}

/// Restores what [`save_state`] wrote into `model` and `opt`.
pub fn load_state<M: lapa_model::burn::module::Module>(
    dir: &Path,
    name: &str,
    optim: &str,
    model: M,
    opt: &mut lapa_model::burn::optim::ModuleOptimizer,
) -> Result<M> {
    let model = lapa_model::artifact::load_weights(&dir.join(format!("{name}.bpk")), model)?;
    let path = dir.join(format!("{optim}.bpk"));
    let rec = lapa_model::burn::optim::OptimizerRecord::load(&path).map_err(|e| anyhow::anyhow!("{}: unreadable optimiser state: {e:?}", path.display()))?;
    *opt = std::mem::replace(opt, lapa_model::burn::optim::AdamConfig::new().init()).load_record(rec);
    Ok(model)
}

/// The loop's cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub steps: u64,
    pub log_every: u64,
    pub checkpoint_every: u64,
}

/// The folder of a run's last complete checkpoint, if it has one.
pub fn find_checkpoint(run: &Path) -> Option<PathBuf> {
    [CKPT_DIR, "checkpoint.old"].iter().map(|d| run.join(d)).find(|d| d.join(STATE_FILE).is_file())
}

/// The step of a run's last checkpoint, if it has one.
pub fn checkpoint_step(run: &Path) -> Option<u64> {
    let state: Value = serde_json::from_slice(&std::fs::read(find_checkpoint(run)?.join(STATE_FILE)).ok()?).ok()?;
    state.get("step")?.as_u64()
}

/// Keeps the CSV rows up to `step` (a resumed run rewrites what came after its checkpoint).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let kept: Vec<&str> =
        text.lines().filter(|l| l.starts_with("step") || l.split(',').next().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s <= step)).collect();
    lapa_fs::atomic_write(path, (kept.join("\n") + "\n").as_bytes())?;
    Ok(())
}

/// Where a run starts: step 0 in a cleaned folder, or the step of its last checkpoint.
#[derive(Debug)]
pub struct Start {
    pub step: u64,
    pub checkpoint: Option<(PathBuf, Value)>,
}

/// Creates the run folder and finds where to start. `resume` needs a checkpoint; without it,
/// an earlier run's checkpoints and metrics are removed (its `train.json` and artifact are
/// overwritten by the caller).
pub fn prepare(run: &Path, resume: bool) -> Result<Start> {
    std::fs::create_dir_all(run).with_context(|| format!("{}: cannot create run folder", run.display()))?;
    if resume {
        let ck = find_checkpoint(run).with_context(|| format!("{}: --resume but no checkpoint in the run folder", run.display()))?;
        let path = ck.join(STATE_FILE);
        let state: Value = serde_json::from_slice(&std::fs::read(&path)?).with_context(|| format!("{}: not JSON", path.display()))?;
        let step = state.get("step").and_then(Value::as_u64).with_context(|| format!("{}: no step", path.display()))?;
        truncate_metrics(&run.join(METRICS_FILE), step)?;
        return Ok(Start { step, checkpoint: Some((ck, state)) });
    }
    for stale in [CKPT_DIR, "checkpoint.old", "checkpoint.new", METRICS_FILE] {
        let p = run.join(stale);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else if p.is_file() {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(Start { step: 0, checkpoint: None })
}

fn checkpoint<S: Stage>(run: &Path, stage: &S, step: u64) -> Result<()> {
    let new = run.join(format!("{CKPT_DIR}.new"));
    let old = run.join(format!("{CKPT_DIR}.old"));
    let cur = run.join(CKPT_DIR);
    if new.exists() {
        std::fs::remove_dir_all(&new)?;
    }
    std::fs::create_dir_all(&new)?;
    let mut state = stage.save_checkpoint(&new)?;
    match &mut state {
        Value::Object(m) => {
            m.insert("step".into(), step.into());
        }
        Value::Null => state = serde_json::json!({ "step": step }),
        _ => bail!("a stage's checkpoint state must be a JSON object"),
    }
    lapa_fs::atomic_write(&new.join(STATE_FILE), &serde_json::to_vec_pretty(&state)?)?;
    if cur.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(&cur, &old)?;
    }
    std::fs::rename(&new, &cur)?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    Ok(())
}

/// Starts (or resumes) a run of `stage` in `run`: prepares the folder, restores the stage's last
/// checkpoint when resuming, writes `train.json` from `train` and the artifact the next stage
/// reads. Returns the step to start from.
pub fn begin<S: Stage>(stage: &mut S, run: &Path, resume: bool, train: &impl serde::Serialize, quiet: bool) -> Result<u64> {
    let start = prepare(run, resume)?;
    if let Some((ck, state)) = &start.checkpoint {
        stage.load_checkpoint(ck, state)?;
        if !quiet {
            println!("resuming {} at step {}", run.display(), start.step);
        }
    }
    lapa_fs::atomic_write(&run.join(TRAIN_FILE), &serde_json::to_vec_pretty(train)?)?;
    stage.save_artifact(&run.join(MODEL_DIR))?;
    Ok(start.step)
}

/// Runs `stage` from `start` to `cadence.steps` on the loader's batches, logging, plotting and
/// checkpointing as it goes. The stage has already restored its checkpoint when resuming.
pub fn fit<S: Stage>(stage: &mut S, run: &Path, cadence: Cadence, start: u64, loader: &mut Loader<S::Batch>, quiet: bool) -> Result<()> {
    let metrics_path = run.join(METRICS_FILE);
    let new_file = !metrics_path.is_file();
    let mut metrics =
        std::fs::OpenOptions::new().create(true).append(true).open(&metrics_path).with_context(|| format!("{}: cannot open", metrics_path.display()))?;
    if new_file {
        writeln!(metrics, "{}", stage.header())?;
    }
    let pb = if quiet { ProgressBar::hidden() } else { ProgressBar::new(cadence.steps) };
    pb.set_style(ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg} ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    pb.set_position(start);
    let png = run.join("curves.png");
    let t0 = Instant::now();
    let mut win_t = Instant::now();
    let mut win_n = 0u64;
    for step in start..cadence.steps {
        let Some(batch) = loader.next_batch() else { bail!("the data loader stopped early at step {step}") };
        stage.step(step, batch)?;
        win_n += 1;
        let done = step + 1;
        if done % cadence.log_every.max(1) == 0 || done == cadence.steps {
            let (row, msg) = stage.log(win_n, win_t.elapsed(), t0.elapsed());
            writeln!(metrics, "{done},{row}")?;
            metrics.flush()?;
            pb.set_message(msg);
            win_n = 0;
            win_t = Instant::now();
        }
        if done % cadence.checkpoint_every.max(1) == 0 || done == cadence.steps {
            checkpoint(run, stage, done)?;
            stage.save_artifact(&run.join(MODEL_DIR))?;
            stage.plot(&metrics_path, &png).with_context(|| format!("{}: step {done}: cannot write the training curves", run.display()))?;
        }
        pb.inc(1);
    }
    pb.finish();
    stage.plot(&metrics_path, &png).with_context(|| format!("{}: cannot write the training curves", run.display()))?;
    Ok(())
}
