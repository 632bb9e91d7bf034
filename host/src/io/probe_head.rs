//! `probe-head.json`: a linear-probe head as `igpt probe` (and `igpt init --probe-head`)
//! writes it and `igpt export` reads it. One serde type for both sides (FORMAT.md).

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where a probe reads its features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeLayer {
    /// The mean-pooled features of layer `l` (`0..=L`, L = the final norm).
    Layer(usize),
    /// Several layers' features concatenated, in this order.
    Concat(Vec<usize>),
    /// The raw pixels (the baseline; no model layer).
    RawPixels,
}

impl ProbeLayer {
    /// Its name in JSON: `"3"`, `"2+3+4"` or `"raw_pixels"`.
    pub fn name(&self) -> String {
        match self {
            ProbeLayer::Layer(l) => l.to_string(),
            ProbeLayer::Concat(ls) => ls
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join("+"),
            ProbeLayer::RawPixels => "raw_pixels".to_string(),
        }
    }

    /// Parses [`ProbeLayer::name`].
    pub fn parse(s: &str) -> Option<ProbeLayer> {
        if s == "raw_pixels" {
            return Some(ProbeLayer::RawPixels);
        }
        let parts: Option<Vec<usize>> = s.split('+').map(|p| p.trim().parse().ok()).collect();
        match parts? {
            v if v.len() == 1 => Some(ProbeLayer::Layer(v[0])),
            v => Some(ProbeLayer::Concat(v)),
        }
    }
}

impl std::fmt::Display for ProbeLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for ProbeLayer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for ProbeLayer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // A layer number as a string (what `probe` writes) or as a number.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(ProbeLayer::Layer(n as usize)),
            Raw::Str(s) => ProbeLayer::parse(&s)
                .ok_or_else(|| serde::de::Error::custom(format!("layer `{s}` is not a number"))),
        }
    }
}

/// The smallest standard deviation a head may hold (the probe's standardiser replaces
/// smaller ones by 1).
pub const MIN_STD: f32 = 1e-12;
/// The largest magnitude of a head's means, standard deviations, weights and biases.
pub const MAX_ABS_VALUE: f32 = 1e6;

/// A linear-probe head: standardise the feature, then `W·z + b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeHead {
    /// Where the features come from.
    pub layer: ProbeLayer,
    /// Class names.
    pub classes: Vec<String>,
    /// Feature means.
    pub mean: Vec<f32>,
    /// Feature standard deviations (positive).
    pub std: Vec<f32>,
    /// `(classes, d)` weights, row-major.
    pub weight: Vec<f32>,
    /// Biases.
    pub bias: Vec<f32>,
    /// True for a seeded random head (`igpt init --probe-head`), not a fitted one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seeded: bool,
}

impl ProbeHead {
    /// Checks every length against the feature width `d` and every value for sanity.
    pub fn validate(&self, d: usize) -> Result<()> {
        let c = self.classes.len();
        ensure!(c > 0, "no classes");
        ensure!(
            c <= igpt_core::format::MAX_CLASSES,
            "{c} classes; a probe head holds at most {} (what an int8 model file can carry)",
            igpt_core::format::MAX_CLASSES
        );
        ensure!(
            self.mean.len() == d && self.std.len() == d,
            "standardisation has {} values, the feature width is {d}",
            self.mean.len()
        );
        ensure!(
            self.weight.len() == c * d && self.bias.len() == c,
            "weights are not {c} x {d} with {c} biases"
        );
        ensure!(
            self.std.iter().all(|s| s.is_finite() && *s > 0.0),
            "a standard deviation is not a positive finite number"
        );
        ensure!(
            self.mean
                .iter()
                .chain(&self.weight)
                .chain(&self.bias)
                .all(|x| x.is_finite()),
            "non-finite values in the mean, weights or biases"
        );
        // Finite but absurd values overflow the scores (p = NaN): the fit never makes a
        // standard deviation below 1e-12 (it uses 1 instead) or values near these bounds.
        ensure!(
            self.std
                .iter()
                .all(|s| (MIN_STD..=MAX_ABS_VALUE).contains(s)),
            "a standard deviation is outside {MIN_STD:e}..={MAX_ABS_VALUE:e}"
        );
        ensure!(
            self.mean
                .iter()
                .chain(&self.weight)
                .chain(&self.bias)
                .all(|x| x.abs() <= MAX_ABS_VALUE),
            "a mean, weight or bias is beyond ±{MAX_ABS_VALUE:e}"
        );
        ensure!(
            self.classes.iter().all(|s| !s.contains('\n')),
            "a class name contains a line break"
        );
        Ok(())
    }

    /// The model layer of a single-layer head (what an int8 file can carry).
    pub fn model_layer(&self) -> Result<usize> {
        match &self.layer {
            ProbeLayer::Layer(l) => Ok(*l),
            ProbeLayer::RawPixels => bail!("a raw-pixel probe has no model layer to export"),
            ProbeLayer::Concat(_) => {
                bail!(
                    "a probe on concatenated layers cannot be exported (int8 files hold one layer)"
                )
            }
        }
    }

    /// Reads `probe-head.json` for a model of width `d`.
    pub fn load(path: &Path, d: usize) -> Result<ProbeHead> {
        let bytes = crate::io::read_limited(path, 256 << 20)?;
        let h: ProbeHead = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a probe head", path.display()))?;
        let width = match &h.layer {
            ProbeLayer::Concat(ls) => d * ls.len(),
            _ => d,
        };
        h.validate(width)
            .with_context(|| format!("{}: bad probe head", path.display()))?;
        Ok(h)
    }

    /// A seeded random head on `layer` for features of width `d` (weights N(0, 1/d),
    /// zero biases, identity standardisation): for benchmarks and firmware tests without
    /// training.
    pub fn seeded(d: usize, layer: usize, classes: usize, seed: u64) -> ProbeHead {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x9e37);
        let std = 1.0 / (d.max(1) as f32).sqrt();
        // The std is positive and finite for every d >= 1.
        let normal = rand_distr::Normal::new(0.0f32, std)
            .unwrap_or_else(|_| rand_distr::Normal::new(0.0, 1.0).expect("N(0, 1)"));
        ProbeHead {
            layer: ProbeLayer::Layer(layer),
            classes: (0..classes).map(|i| format!("class {i}")).collect(),
            mean: vec![0.0; d],
            std: vec![1.0; d],
            weight: (0..classes * d).map(|_| normal.sample(&mut rng)).collect(),
            bias: vec![0.0; classes],
            seeded: true,
        }
    }

    /// Writes it atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, serde_json::to_string(self)?.as_bytes())
    }

    /// Class scores of a feature vector.
    pub fn scores(&self, f: &[f32]) -> Vec<f32> {
        let d = self.mean.len();
        let z: Vec<f32> = f
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((x, m), s)| (x - m) / s)
            .collect();
        self.weight
            .chunks_exact(d.max(1))
            .zip(&self.bias)
            .map(|(w, b)| b + w.iter().zip(&z).map(|(a, b)| a * b).sum::<f32>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_round_trip_and_old_files_read() {
        for l in [
            ProbeLayer::Layer(3),
            ProbeLayer::Concat(vec![1, 2, 3]),
            ProbeLayer::RawPixels,
        ] {
            assert_eq!(ProbeLayer::parse(&l.name()), Some(l));
        }
        let old = r#"{"layer":"2","classes":["a","b"],"mean":[0.0],"std":[1.0],"weight":[1.0,2.0],"bias":[0.0,0.5]}"#;
        let h: ProbeHead = serde_json::from_str(old).unwrap();
        assert_eq!(h.layer, ProbeLayer::Layer(2));
        h.validate(1).unwrap();
        let num = old.replace("\"2\"", "2");
        assert_eq!(serde_json::from_str::<ProbeHead>(&num).unwrap(), h);
        assert!(serde_json::from_str::<ProbeHead>(&old.replace("\"2\"", "\"x\"")).is_err());
        let mut bad = h.clone();
        bad.std[0] = 0.0;
        assert!(bad.validate(1).is_err());
        bad.std[0] = f32::NAN;
        assert!(bad.validate(1).is_err());
    }
}
