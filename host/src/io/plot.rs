//! Small PNG line plots (loss curves, accuracy by layer) with no font files: text is drawn
//! with a built-in 3x5 pixel font (digits, capital letters, a little punctuation; lower
//! case is drawn as capitals), scaled up.

use anyhow::Result;
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
    /// Draw a square marker at each point.
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

const W: usize = 800;
const H: usize = 500;
const LEFT: usize = 90;
const RIGHT: usize = 30;
const TOP: usize = 50;
const BOTTOM: usize = 70;
const SCALE: usize = 2;

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for ox in 0..thick {
                for oy in 0..thick {
                    self.set(x + ox - thick / 2, y + oy - thick / 2, c);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        self.glyphs(x, y, s, c, false);
    }

    /// Text drawn bottom-to-top (for the y-axis label).
    fn text_vertical(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        self.glyphs(x, y, s, c, true);
    }

    /// Draws `s` from `(x, y)`: left to right, or bottom to top when `vertical`.
    fn glyphs(&mut self, x: i64, y: i64, s: &str, c: [u8; 3], vertical: bool) {
        for (i, ch) in s.chars().enumerate() {
            for (r, bits) in glyph(ch).iter().enumerate() {
                for col in (0..3).filter(|col| bits & (0b100 >> col) != 0) {
                    for o1 in 0..SCALE {
                        for o2 in 0..SCALE {
                            let along = (i * 4 * SCALE + col * SCALE + o1) as i64;
                            let across = (r * SCALE + o2) as i64;
                            if vertical {
                                self.set(x + across, y - along, c);
                            } else {
                                self.set(x + along, y + across, c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Pixel width of a string.
fn text_width(s: &str) -> usize {
    s.chars().count() * 4 * SCALE
}

/// Rows of a 3x5 glyph, most significant of 3 bits on the left.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '=' => [0, 7, 0, 7, 0],
        '/' => [1, 1, 2, 4, 4],
        ':' => [0, 2, 0, 2, 0],
        '%' => [5, 1, 2, 4, 5],
        '(' => [2, 4, 4, 4, 2],
        ')' => [2, 1, 1, 1, 2],
        '_' => [0, 0, 0, 0, 7],
        _ => [0, 0, 0, 0, 0],
    }
}

/// Tick positions: about 5 "nice" values (1, 2 or 5 times a power of ten) in `[lo, hi]`.
pub fn nice_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64) {
    let range = (hi - lo).abs().max(1e-12);
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| range / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    let ticks = (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .take(20)
        .collect();
    (ticks, step)
}

fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// Writes a line plot as PNG (atomically). Non-finite points are skipped.
pub fn line_plot(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
) -> Result<()> {
    let mut cv = Canvas {
        px: vec![255; W * H * 3],
    };
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0.is_finite() && p.1.is_finite())
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let tx = |x: f64| (LEFT as f64 + (x - x0) / (x1 - x0) * pw).round() as i64;
    let ty = |y: f64| (TOP as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph).round() as i64;
    let grey = [200, 200, 200];
    let black = [0, 0, 0];
    // Grid, ticks and labels.
    let (yt, ys) = nice_ticks(y0, y1);
    for v in yt {
        let y = ty(v);
        cv.line((LEFT as i64, y), ((W - RIGHT) as i64, y), grey, 1);
        let s = fmt_tick(v, ys);
        cv.text(LEFT as i64 - 8 - text_width(&s) as i64, y - 5, &s, black);
    }
    let (xt, xs) = nice_ticks(x0, x1);
    for v in xt {
        let x = tx(v);
        cv.line((x, TOP as i64), (x, (H - BOTTOM) as i64), grey, 1);
        let s = fmt_tick(v, xs);
        cv.text(
            x - text_width(&s) as i64 / 2,
            (H - BOTTOM) as i64 + 8,
            &s,
            black,
        );
    }
    // Frame.
    let (l, r, t, b) = (
        LEFT as i64,
        (W - RIGHT) as i64,
        TOP as i64,
        (H - BOTTOM) as i64,
    );
    cv.line((l, t), (r, t), black, 1);
    cv.line((l, b), (r, b), black, 1);
    cv.line((l, t), (l, b), black, 1);
    cv.line((r, t), (r, b), black, 1);
    // Titles.
    cv.text((W / 2 - text_width(title) / 2) as i64, 15, title, black);
    cv.text(
        (LEFT + (W - LEFT - RIGHT) / 2 - text_width(xlabel) / 2) as i64,
        (H - 30) as i64,
        xlabel,
        black,
    );
    cv.text_vertical(
        12,
        (TOP + (H - TOP - BOTTOM) / 2 + text_width(ylabel) / 2) as i64,
        ylabel,
        black,
    );
    // Series and legend.
    let mut legend_x = LEFT as i64;
    for s in series {
        let p: Vec<(i64, i64)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|&(x, y)| (tx(x), ty(y)))
            .collect();
        for w in p.windows(2) {
            cv.line(w[0], w[1], s.color, 2);
        }
        if s.markers || p.len() == 1 {
            for &(x, y) in &p {
                for ox in -3..=3 {
                    for oy in -3..=3 {
                        cv.set(x + ox, y + oy, s.color);
                    }
                }
            }
        }
        // Legend entries side by side in the top margin, clear of the data.
        let ly = TOP as i64 - 16;
        let lx = legend_x;
        cv.line((lx, ly + 4), (lx + 22, ly + 4), s.color, 3);
        cv.text(lx + 28, ly, &s.label, black);
        legend_x += 28 + text_width(&s.label) as i64 + 24;
    }
    crate::io::write_png(path, W, H, 3, &cv.px)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_inside() {
        let (t, s) = nice_ticks(0.0, 1.0);
        assert_eq!(s, 0.2);
        assert_eq!(t.len(), 6);
        let (t, s) = nice_ticks(3.1, 7.9);
        assert_eq!(s, 1.0);
        assert_eq!(t, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!(fmt_tick(0.4, 0.2), "0.4");
        assert_eq!(fmt_tick(2000.0, 500.0), "2000");
    }

    #[test]
    fn writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plot.png");
        let s = Series {
            label: "train".into(),
            points: vec![(0.0, 3.0), (10.0, 2.0), (20.0, f64::NAN), (30.0, 1.5)],
            color: COLORS[0],
            markers: false,
        };
        line_plot(&p, "LOSS", "step", "bits/dim", &[s]).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (800, 500));
        // Some pixels carry the series colour.
        assert!(img.pixels().any(|px| px.0 == COLORS[0]));
    }
}
