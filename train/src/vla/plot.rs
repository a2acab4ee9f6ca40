//! The policy's training curves: cross-entropy (log scale) and target accuracy against step.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

pub fn curves(csv: &Path, png: &Path) -> Result<()> {
    crate::laq::plot::register_font();
    let rows = crate::laq::plot::read_columns::<3>(csv)?;
    if rows.is_empty() {
        return Ok(());
    }
    let e = |e: &dyn std::fmt::Display| anyhow!("{}: plotting: {e}", png.display());
    let root = BitMapBackend::new(png, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(550);
    let max_step = rows.iter().map(|r| r[0]).fold(1.0, f64::max);
    crate::laq::plot::loss_panel(&left, &rows.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(), "cross-entropy", "nats", 1e-4)?;
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
