//! `igpt export-hf`: a checkpoint as a HuggingFace ImageGPT folder (`import-hf`, the way
//! in, is with the other checkpoint makers in `train.rs`).

use anyhow::Result;
use igpt::io::checkpoint::Checkpoint;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportHfArgs {
    /// The checkpoint (AR; with its palette for preprocessor_config.json).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output folder (created if needed): config.json, model.safetensors and, with a
    /// palette, preprocessor_config.json, for transformers' `from_pretrained(DIR)`.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn export_hf_cmd(a: ExportHfArgs) -> Result<()> {
    let ck = Checkpoint::load(&a.checkpoint)?;
    let files = igpt::io::hf_export::export(&ck)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.checkpoint.display()))?;
    let paths = files.paths(&a.out);
    igpt::io::guard::ensure_distinct(&paths, [&a.checkpoint])?;
    files.write(&a.out)?;
    let c = ck.config;
    println!(
        "{}: {} ({} layers, width {}, {} heads, {}x{}, vocab_size {}){}",
        a.out.display(),
        paths
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", "),
        c.layers,
        c.width,
        c.heads,
        c.side,
        c.side,
        c.vocab + 1,
        ck.params.score.as_ref().map_or(String::new(), |s| format!(
            "; ImageGPTForImageClassification, {} labels",
            s.rows
        ))
    );
    if ck.palette.is_none() {
        println!("no palette in the checkpoint: no preprocessor_config.json (HF's clusters)");
    }
    Ok(())
}
