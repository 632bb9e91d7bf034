//! The model-shape flags (`--preset` and per-field overrides) shared by subcommands.

use anyhow::{Context, Result};
use igpt_core::{Config, Preset};

/// A model shape from a preset, with any field overridden.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Preset shape: S, M, L (the paper's), cpu, fw, test.
    #[arg(long)]
    pub preset: Option<String>,
    /// Number of transformer blocks (overrides the preset).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Model width d (overrides the preset).
    #[arg(long)]
    pub width: Option<usize>,
    /// Attention heads; must divide the width (overrides the preset).
    #[arg(long)]
    pub heads: Option<usize>,
    /// Image side in pixels; the sequence length is side² (overrides the preset).
    #[arg(long)]
    pub side: Option<usize>,
    /// Palette size k (overrides the preset).
    #[arg(long)]
    pub vocab: Option<usize>,
}

impl ModelArgs {
    /// True when no flag was given.
    pub fn is_empty(&self) -> bool {
        self.preset.is_none()
            && self.layers.is_none()
            && self.width.is_none()
            && self.heads.is_none()
            && self.side.is_none()
            && self.vocab.is_none()
    }

    /// The validated config: the preset (or `default`) with overrides applied.
    pub fn config(&self, default: Preset) -> Result<Config> {
        let preset = match &self.preset {
            Some(name) => Preset::from_name(name).with_context(|| format!("--preset {name}"))?,
            None => default,
        };
        let mut c = Config::preset(preset);
        c.layers = self.layers.unwrap_or(c.layers);
        c.width = self.width.unwrap_or(c.width);
        c.heads = self.heads.unwrap_or(c.heads);
        c.side = self.side.unwrap_or(c.side);
        c.vocab = self.vocab.unwrap_or(c.vocab);
        c.validate().map_err(|e| {
            use igpt_core::Error as E;
            let flag = match e {
                E::BadVocab(_) => "--vocab",
                E::BadSide(_) => "--side",
                E::BadWidth(_) => "--width",
                E::BadHeads(_) | E::WidthNotDivisible { .. } => "--heads",
                E::BadLayers(_) => "--layers",
                _ => "--preset",
            };
            anyhow::anyhow!("{flag}: invalid model shape: {e}")
        })?;
        Ok(c)
    }
}

/// [`ModelArgs::config`] for a model that will be allocated: its weights must fit in
/// the memory available.
pub fn allocatable(c: Config) -> Result<Config> {
    igpt::io::ensure_memory(
        igpt::nn::memory::weight_bytes(&c),
        "choose a smaller model (--width, --layers)",
    )?;
    Ok(c)
}

/// Sets the worker-thread count of the global pool (`--threads`): 1 to 4x this machine's
/// cores (more only slows every parallel loop down).
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        anyhow::ensure!(
            (1..=4 * cores).contains(&t),
            "--threads {t} is out of range (1..={}, 4x this machine's {cores} cores)",
            4 * cores
        );
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("cannot set the thread count")?;
    }
    Ok(())
}
