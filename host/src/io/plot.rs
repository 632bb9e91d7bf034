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

/// Writes a line plot as PNG (atomically), the legend in the corner the lines leave
/// free. Non-finite points are skipped.
pub fn line_plot(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
) -> Result<()> {
    let (x, y) = ranges(series);
    let legend = free_corner(series, x, y);
    line_plot_at(path, title, xlabel, ylabel, series, legend)
}

/// The finite points of a series.
fn finite(s: &Series) -> Vec<(f64, f64)> {
    s.points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect()
}

/// True when every x is a whole number and there are few of them (layers, epochs): the
/// x axis then gets integer ticks.
fn integer_x(series: &[Series]) -> bool {
    let xs: Vec<f64> = series.iter().flat_map(finite).map(|p| p.0).collect();
    !xs.is_empty() && xs.iter().all(|x| x.fract() == 0.0 && x.abs() <= 1e6) && {
        let (lo, hi) = range(xs.iter().copied(), 0.0);
        hi - lo <= 40.0
    }
}

/// The x and y ranges of the plot: the points' range, padded so that markers at the ends
/// are drawn whole.
fn ranges(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let pts = || series.iter().flat_map(finite);
    let x_pad = if series.iter().any(|s| s.markers) {
        0.04
    } else {
        0.0
    };
    (
        range(pts().map(|p| p.0), x_pad),
        range(pts().map(|p| p.1), 0.06),
    )
}

/// The corner whose legend-sized box (a third of the width, a tenth of the height per
/// series) the lines cross least, points sampled along each segment; upper right first
/// on ties.
fn free_corner(series: &[Series], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> Legend {
    let mut samples = Vec::new();
    for s in series {
        for w in finite(s).windows(2) {
            for i in 0..=16 {
                let t = i as f64 / 16.0;
                samples.push((
                    w[0].0 + t * (w[1].0 - w[0].0),
                    w[0].1 + t * (w[1].1 - w[0].1),
                ));
            }
        }
        samples.extend(finite(s));
    }
    let (bw, bh) = (0.36, (0.08 * series.len() as f64 + 0.04).min(0.5));
    let norm = |(x, y): (f64, f64)| ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
    let crossings = |left: bool, top: bool| {
        samples
            .iter()
            .map(|&p| norm(p))
            .filter(|&(u, v)| {
                (if left { u <= bw } else { u >= 1.0 - bw })
                    && (if top { v >= 1.0 - bh } else { v <= bh })
            })
            .count()
    };
    [
        (Legend::UpperRight, crossings(false, true)),
        (Legend::UpperLeft, crossings(true, true)),
        (Legend::LowerRight, crossings(false, false)),
        (Legend::LowerLeft, crossings(true, false)),
    ]
    .into_iter()
    .min_by_key(|c| c.1)
    .map_or(Legend::UpperRight, |c| c.0)
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
        let ((x0, x1), (y0, y1)) = ranges(series);
        let whole = integer_x(series);
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
            .x_labels(if whole {
                (x1 - x0).ceil() as usize + 1
            } else {
                10
            })
            .x_label_formatter(&|v| {
                if !whole {
                    tick(*v, x1 - x0)
                } else if (v - v.round()).abs() < 1e-6 {
                    format!("{:.0}", v.round())
                } else {
                    String::new()
                }
            })
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

    fn line(points: Vec<(f64, f64)>, markers: bool) -> Series {
        Series {
            label: "s".into(),
            points,
            color: COLORS[0],
            markers,
        }
    }

    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        let rising = [line(vec![(0.0, 0.0), (10.0, 10.0)], false)];
        let (x, y) = ranges(&rising);
        assert!(matches!(free_corner(&rising, x, y), Legend::UpperLeft));
        let falling = [line(vec![(0.0, 10.0), (10.0, 0.0)], false)];
        let (x, y) = ranges(&falling);
        assert!(matches!(free_corner(&falling, x, y), Legend::UpperRight));
        // A curve high everywhere but in the lower right.
        let high = [line(
            vec![(0.0, 9.0), (5.0, 10.0), (8.0, 9.0), (10.0, 0.0)],
            false,
        )];
        let (x, y) = ranges(&high);
        assert!(matches!(free_corner(&high, x, y), Legend::LowerLeft));
    }

    #[test]
    fn layers_get_integer_ticks_and_end_markers_fit() {
        let layers = [line((0..7).map(|l| (l as f64, 80.0)).collect(), true)];
        assert!(integer_x(&layers));
        let ((x0, x1), _) = ranges(&layers);
        assert!(
            x0 < 0.0 && x1 > 6.0,
            "markers at 0 and 6 are inside ({x0}, {x1})"
        );
        assert!(!integer_x(&[line(vec![(0.5, 1.0), (1.0, 2.0)], false)]));
        assert!(!integer_x(&[line(vec![(0.0, 1.0), (6000.0, 2.0)], false)]));
    }

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
