//! PNG line plots (loss curves, accuracy by layer, scaling plots) drawn with `plotters`
//! on its bitmap backend. Text uses DejaVu Sans, embedded in the binary
//! (`host/assets/`, with its licence) and registered with plotters' `ab_glyph` text
//! renderer, so plots render the same on a headless machine with no system fonts.

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points, in x order.
    pub points: Vec<(f64, f64)>,
    /// RGB colour.
    pub color: [u8; 3],
    /// Draw a marker at each point.
    pub markers: bool,
}

/// Distinct colours for series.
pub const COLORS: [[u8; 3]; 6] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
];

const W: u32 = 800;
const H: u32 = 500;
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "igpt-sans";

fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded plot font does not load"))
    }
}

/// The finite range of the points, padded a little; a unit range when empty or flat.
fn range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let p = (hi - lo) * pad;
    (lo - p, hi + p)
}

/// A tick label with as many decimals as a span of `span` needs.
fn tick(v: f64, span: f64) -> String {
    let decimals = if span >= 20.0 {
        0
    } else if span >= 2.0 {
        1
    } else if span >= 0.2 {
        2
    } else {
        3
    };
    format!("{v:.decimals$}")
}

/// Where a plot's legend goes.
pub use plotters::chart::SeriesLabelPosition as Legend;

/// Writes a line plot as PNG (atomically), the legend at the upper right. Non-finite
/// points are skipped.
pub fn line_plot(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
) -> Result<()> {
    line_plot_at(path, title, xlabel, ylabel, series, Legend::UpperRight)
}

/// [`line_plot`] with the legend at `legend`.
pub fn line_plot_at(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    legend: Legend,
) -> Result<()> {
    register_font()?;
    let mut px = vec![255u8; (W * H * 3) as usize];
    let err = |e: &dyn std::fmt::Display| anyhow!("{}: cannot draw the plot: {e}", path.display());
    {
        let root = BitMapBackend::with_buffer(&mut px, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let finite = |s: &Series| {
            s.points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect::<Vec<_>>()
        };
        let (x0, x1) = range(series.iter().flat_map(&finite).map(|p| p.0), 0.0);
        let (y0, y1) = range(series.iter().flat_map(&finite).map(|p| p.1), 0.05);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc(ylabel)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(RGBColor(245, 245, 245))
            .max_light_lines(2)
            .x_label_formatter(&|v| tick(*v, x1 - x0))
            .y_label_formatter(&|v| tick(*v, y1 - y0))
            .draw()
            .map_err(|e| err(&e))?;
        for s in series {
            let pts = finite(s);
            let c = RGBColor(s.color[0], s.color[1], s.color[2]);
            let drawn = chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(|e| err(&e))?;
            drawn.label(s.label.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
            });
            if s.markers || pts.len() == 1 {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .position(legend)
                .draw()
                .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    crate::io::write_png(path, W as usize, H as usize, 3, &px)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_with_text_and_the_series() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plot.png");
        let s = Series {
            label: "train".into(),
            points: vec![(0.0, 3.0), (10.0, 2.0), (20.0, f64::NAN), (30.0, 1.5)],
            color: COLORS[0],
            markers: false,
        };
        line_plot(&p, "Loss (%)", "step", "bits/dim", &[s]).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (800, 500));
        // Some pixels carry the series colour; some are dark (text and axes).
        assert!(img.pixels().any(|px| px.0 == COLORS[0]));
        assert!(
            img.pixels()
                .filter(|px| px.0.iter().all(|&c| c < 60))
                .count()
                > 500
        );
        // An empty plot and a one-point series draw too.
        line_plot(&p, "empty", "x", "y", &[]).unwrap();
        let one = Series {
            label: "one".into(),
            points: vec![(1.0, 1.0)],
            color: COLORS[1],
            markers: false,
        };
        line_plot(&p, "one", "x", "y", &[one]).unwrap();
    }
}
