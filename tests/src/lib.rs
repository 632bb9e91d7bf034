//! Helpers for the cross-crate tests: where the peer fixtures and shared data live, and
//! reading safetensors tensors by name.
//!
//! The HuggingFace ImageGPT fixtures are found in the folder named by `IGPT_HF_FIXTURES`,
//! by default `tests/fixtures/hf-imagegpt` in the repository. Every `*.safetensors`
//! file there that holds the tensors a test needs is a case; a test fails when it finds
//! none, so an empty or misplaced fixture folder can never pass.

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The repository's `data/` folder (the demo subset, the CIFAR-10 sample, photos).
pub fn data_dir() -> PathBuf {
    repo_root().join("data")
}

/// The fixture folder: `$IGPT_HF_FIXTURES`, or `tests/fixtures/hf-imagegpt`.
pub fn fixture_dir() -> PathBuf {
    match std::env::var_os("IGPT_HF_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("tests/fixtures/hf-imagegpt"),
    }
}

/// One safetensors file, read whole.
pub struct Fixture {
    /// Where it was read from.
    pub path: PathBuf,
    bytes: Vec<u8>,
}

impl Fixture {
    /// Reads a file.
    pub fn open(path: &Path) -> Result<Fixture> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: not safetensors", path.display()))?;
        Ok(Fixture {
            path: path.to_path_buf(),
            bytes,
        })
    }

    fn st(&self) -> SafeTensors<'_> {
        // Checked in `open`.
        SafeTensors::deserialize(&self.bytes).expect("validated in open")
    }

    /// True when the file holds a tensor of this name.
    pub fn has(&self, name: &str) -> bool {
        self.st().names().contains(&name)
    }

    /// Tensor names.
    pub fn names(&self) -> Vec<String> {
        self.st().names().into_iter().map(String::from).collect()
    }

    fn raw(&self, name: &str, dtype: Dtype) -> Result<(Vec<usize>, Vec<u8>)> {
        let st = self.st();
        let t = st
            .tensor(name)
            .with_context(|| format!("{}: no tensor {name}", self.path.display()))?;
        if t.dtype() != dtype {
            bail!(
                "{}: {name} is {:?}, expected {dtype:?}",
                self.path.display(),
                t.dtype()
            );
        }
        Ok((t.shape().to_vec(), t.data().to_vec()))
    }

    /// A U8 tensor: shape and values.
    pub fn u8(&self, name: &str) -> Result<(Vec<usize>, Vec<u8>)> {
        self.raw(name, Dtype::U8)
    }

    /// An I64 tensor: shape and values.
    pub fn i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let (s, b) = self.raw(name, Dtype::I64)?;
        Ok((
            s,
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ))
    }

    /// An F32 tensor: shape and values.
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (s, b) = self.raw(name, Dtype::F32)?;
        Ok((
            s,
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ))
    }
}

/// Every fixture in [`fixture_dir`] holding all of `tensors`, sorted by path. Fails when
/// the folder cannot be read or no file qualifies.
pub fn cases_with(tensors: &[&str]) -> Result<Vec<Fixture>> {
    cases_with_in(&fixture_dir(), tensors)
}

/// [`cases_with`] on a given folder.
pub fn cases_with_in(dir: &Path, tensors: &[&str]) -> Result<Vec<Fixture>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("fixture folder {} (set IGPT_HF_FIXTURES)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let f = Fixture::open(&p)?;
        if tensors.iter().all(|t| f.has(t)) {
            out.push(f);
        }
    }
    if out.is_empty() {
        bail!(
            "no fixture in {} holds {tensors:?}: a test without cases proves nothing",
            dir.display()
        );
    }
    Ok(out)
}

/// True when running under CI (`CI` set to anything but `false` or empty).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}
