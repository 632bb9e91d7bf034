//! `igpt demo`: the whole pipeline on the embedded Fashion-MNIST subset.

use super::args::set_threads;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "igpt-demo")]
    pub out: PathBuf,
    /// Use this dataset instead of the embedded 2,000 + 2,000 image subset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A tiny model on part of the subset: under a minute.
    #[arg(long)]
    pub quick: bool,
    /// A pretrained checkpoint to probe on the same images beside raw pixels and a
    /// random-init control (default: the repository's shipped model, `models/`, when it
    /// is there; not with --quick unless given).
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// Do not probe a pretrained model.
    #[arg(long, conflicts_with = "pretrained")]
    pub no_pretrained: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn demo_cmd(a: DemoArgs) -> Result<()> {
    set_threads(a.threads)?;
    let shipped = PathBuf::from(igpt::demo::SHIPPED_MODEL);
    let pretrained = match (a.pretrained, a.no_pretrained || a.quick) {
        (Some(p), _) => Some(p),
        (None, false) if shipped.exists() => Some(shipped.clone()),
        (None, false) => {
            eprintln!(
                "demo: no shipped model at {} (a clone with models/ has it; --pretrained PATH names another): skipping its probe",
                shipped.display()
            );
            None
        }
        (None, true) => None,
    };
    // The shipped classifier comes first (not with --quick: a tiny run).
    let classifier = (!a.quick)
        .then(|| igpt::demo::ClassifierFiles {
            model: PathBuf::from(igpt::demo::SHIPPED_CLASSIFIER),
            checkpoint: shipped.clone(),
            labels: igpt::demo::SHIPPED_CLASSIFIER_LABELS,
        })
        .filter(|c| c.model.exists() && c.checkpoint.exists());
    let cfg = igpt::demo::DemoConfig {
        out: a.out.clone(),
        data: a.data,
        quick: a.quick,
        classifier,
        pretrained,
    };
    let s = igpt::demo::run(&cfg, true)?;
    print!("{}", igpt::demo::table(&s, &a.out));
    Ok(())
}
