//! Training curves as PNG (plotters, bitmap backend, embedded DejaVu Sans).

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

static FONT: Once = Once::new();

pub(crate) fn register_font() {
    FONT.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

/// Reads the first `N` columns of a metrics CSV's rows (the header skipped, rows that do not
/// parse dropped): `step,loss,…` as every stage of the trainer writes them.
pub(crate) fn read_columns<const N: usize>(csv: &Path) -> Result<Vec<[f64; N]>> {
    let text = std::fs::read_to_string(csv).with_context(|| format!("{}: cannot read", csv.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let v: Vec<f64> = l.split(',').take(N).filter_map(|x| x.parse().ok()).collect();
            v.try_into().ok()
        })
        .collect())
}

/// The loss panel every stage's curves start with: column 1 against step, log scale, values
/// floored at `floor`.
pub(crate) fn loss_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    rows: &[(f64, f64)],
    caption: &str,
    unit: &str,
    floor: f64,
) -> Result<()> {
    let e = |e: &dyn std::fmt::Display| anyhow!("plotting {caption}: {e}");
    let max_step = rows.iter().map(|r| r.0).fold(1.0, f64::max);
    let (lmin, lmax) = rows.iter().fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r.1), b.max(r.1)));
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..max_step, (lmin.max(floor) * 0.8..lmax.max(floor) * 1.25).log_scale())
        .map_err(|x| e(&x))?;
    c.configure_mesh().x_desc("step").y_desc(unit).y_label_formatter(&|v| format!("{v:.3}")).label_style(("sans-serif", 12)).draw().map_err(|x| e(&x))?;
    c.draw_series(LineSeries::new(rows.iter().map(|r| (r.0, r.1.max(floor))), &BLUE)).map_err(|x| e(&x))?;
    Ok(())
}

/// Loss (log scale) and codebook perplexity / codes used against step, side by side.
pub fn curves(csv: &Path, png: &Path) -> Result<()> {
    register_font();
    let rows = read_columns::<4>(csv)?;
    if rows.is_empty() {
        return Ok(());
    }
    let e = |e: &dyn std::fmt::Display| anyhow!("{}: plotting: {e}", png.display());
    let root = BitMapBackend::new(png, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (left, right) = root.split_horizontally(550);
    let max_step = rows.iter().map(|r| r[0]).fold(1.0, f64::max);
    loss_panel(&left, &rows.iter().map(|r| (r[0], r[1])).collect::<Vec<_>>(), "reconstruction loss (pixel MSE)", "MSE", 1e-6)?;
    let kmax = rows.iter().map(|r| r[3].max(r[2])).fold(1.0, f64::max).ceil() + 1.0;
    let mut c2 = ChartBuilder::on(&right)
        .caption("codebook perplexity and codes used", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..max_step, 0f64..kmax)
        .map_err(|x| e(&x))?;
    c2.configure_mesh().x_desc("step").label_style(("sans-serif", 12)).draw().map_err(|x| e(&x))?;
    c2.draw_series(LineSeries::new(rows.iter().map(|r| (r[0], r[2])), &RED))
        .map_err(|x| e(&x))?
        .label("perplexity")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED));
    c2.draw_series(LineSeries::new(rows.iter().map(|r| (r[0], r[3])), &GREEN))
        .map_err(|x| e(&x))?
        .label("codes used")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], GREEN));
    c2.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).label_font(("sans-serif", 12)).draw().map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
