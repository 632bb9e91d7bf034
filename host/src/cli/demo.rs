//! `igpt demo`: the whole pipeline on the embedded Fashion-MNIST subset.

use super::args::set_threads;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "igpt-demo")]
    pub out: PathBuf,
    /// Use this dataset instead of the embedded 2,000 + 500 image subset.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A tiny model on part of the subset: under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn demo_cmd(a: DemoArgs) -> Result<()> {
    set_threads(a.threads)?;
    let cfg = igpt::demo::DemoConfig {
        out: a.out.clone(),
        data: a.data,
        quick: a.quick,
    };
    let s = igpt::demo::run(&cfg, true)?;
    print!("{}", igpt::demo::table(&s, &a.out));
    Ok(())
}
