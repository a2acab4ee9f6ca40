//! The policy's training curves: cross-entropy (log scale) and target accuracy against step.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

/// Reads `step,loss,accuracy,…` rows.
fn read(csv: &Path) -> Result<Vec<[f64; 3]>> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("{}: cannot read", csv.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let v: Vec<f64> = l.split(',').take(3).filter_map(|x| x.parse().ok()).collect();
            (v.len() == 3).then(|| [v[0], v[1], v[2]])
        })
        .collect())
}

pub fn curves(csv: &Path, png: &Path) -> Result<()> {
    crate::laq::plot::register_font();
    let rows = read(csv)?;
    if rows.is_empty() {
        return Ok(());
    }
    let e = |e: &dyn std::fmt::Display| anyhow!("{}: plotting: {e}", png.display());
    let root = BitMapBackend::new(png, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(550);
    let max_step = rows.iter().map(|r| r[0]).fold(1.0, f64::max);
    let (lmin, lmax) = rows.iter().fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r[1]), b.max(r[1])));
    let mut c = ChartBuilder::on(&left)
        .caption("cross-entropy", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..max_step, (lmin.max(1e-4) * 0.8..lmax.max(1e-4) * 1.25).log_scale())
        .map_err(|x| e(&x))?;
    c.configure_mesh().x_desc("step").y_desc("nats").y_label_formatter(&|v| format!("{v:.3}")).label_style(("sans-serif", 12)).draw().map_err(|x| e(&x))?;
    c.draw_series(LineSeries::new(rows.iter().map(|r| (r[0], r[1].max(1e-4))), &BLUE)).map_err(|x| e(&x))?;
    let mut c2 = ChartBuilder::on(&right)
        .caption("target accuracy (argmax = label)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..max_step, 0f64..100f64)
        .map_err(|x| e(&x))?;
    c2.configure_mesh().x_desc("step").y_desc("%").label_style(("sans-serif", 12)).draw().map_err(|x| e(&x))?;
    c2.draw_series(LineSeries::new(rows.iter().map(|r| (r[0], 100.0 * r[2])), &RED)).map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
