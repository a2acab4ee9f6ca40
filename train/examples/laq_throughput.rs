//! LAQ training throughput in burn on random frames: the counterpart of `bench/laq_torch.py`
//! (same model, config, batch, Adam settings, per-tensor clipping, host read of loss and codes).
//!
//! `cargo run --release -p lapa-train --example laq_throughput -- small 32 30 cpu`
//! Prints one JSON line.

use std::time::Instant;

use anyhow::{Context, Result};
use lapa_model::LaqConfig;
use lapa_model::burn::grad_clipping::GradientClippingConfig;
use lapa_model::burn::module::Module;
use lapa_model::burn::optim::{AdamConfig, GradientsParams};
use lapa_model::burn::tensor::{Distribution, Tensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map_or("small", String::as_str);
    let batch: usize = args.get(2).map_or(Ok(32), |s| s.parse()).context("batch")?;
    let steps: usize = args.get(3).map_or(Ok(30), |s| s.parse()).context("steps")?;
    let device_name = args.get(4).map_or("cpu", String::as_str);
    let warmup = 3;
    let cfg = LaqConfig::preset(preset)?;
    let device = lapa_model::device(device_name)?.autodiff();
    device.seed(0);
    let mut model = cfg.init(&device)?;
    let mut opt = AdamConfig::new().with_beta_2(0.99).with_grad_clipping(Some(GradientClippingConfig::Norm(0.5))).init();
    let shape = [batch, cfg.n_patches(), cfg.patch_dim()];
    let x0 = Tensor::<3>::random(shape, Distribution::Default, &device);
    let x1 = Tensor::<3>::random(shape, Distribution::Default, &device);
    let mut t0 = Instant::now();
    for i in 0..warmup + steps {
        if i == warmup {
            t0 = Instant::now();
        }
        let noise = Tensor::<2>::random([batch * cfg.n_tokens, cfg.code_dim], Distribution::Normal(0.0, 1.0), &device);
        let out = model.forward_train(x0.clone(), x1.clone(), noise);
        let _loss: f32 = out.loss.clone().into_scalar();
        let _codes = out.indices.into_data();
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = opt.step(1e-4, model, grads);
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "{{\"framework\": \"burn 0.22.1\", \"config\": \"{preset}\", \"batch\": {batch}, \"steps\": {steps}, \"device\": \"{device_name}\", \"params\": {}, \"samples_per_s\": {:.3}, \"step_ms\": {:.2}}}",
        model.num_params(),
        (batch * steps) as f64 / dt,
        1000.0 * dt / steps as f64
    );
    Ok(())
}
