//! A cheap fingerprint of a dataset's files, recorded by a training run so that
//! `--resume` refuses data that changed under it.
//!
//! Per file (every non-hidden file under the data path, sorted): its path relative to
//! the data path, its size, and a CRC-32 of its first and last 64 KiB and of 16 evenly
//! spaced 4 KiB samples between (about 200 KiB read per file however large; a class
//! folder of 60,000 small images is read once through). A gzip file's last bytes hold
//! the CRC of its whole content, so any change to a compressed IDX file shows.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    /// Path relative to the data path (empty when the data path is this file).
    pub file: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32 of the sampled bytes.
    pub crc: u32,
}

/// The fingerprint of a dataset: its files, sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    /// Every file.
    pub files: Vec<FileFingerprint>,
}

const EDGE: u64 = 64 << 10;
const SAMPLE: u64 = 4 << 10;
const SAMPLES: u64 = 16;

impl DataFingerprint {
    /// Fingerprints the files under `data` (a file or a folder).
    pub fn of(data: &Path) -> Result<DataFingerprint> {
        let mut paths = Vec::new();
        collect(data, &mut paths)?;
        paths.sort();
        let files = paths
            .iter()
            .map(|p| {
                let rel = p.strip_prefix(data).unwrap_or(p);
                file_print(p, rel.to_string_lossy().into_owned())
            })
            .collect::<Result<_>>()?;
        Ok(DataFingerprint { files })
    }

    /// The first difference of `now` from this (recorded) fingerprint, as a sentence
    /// naming the file under `data`; `None` when they are the same.
    pub fn difference(&self, now: &DataFingerprint, data: &Path) -> Option<String> {
        let name = |f: &str| {
            if f.is_empty() {
                data.display().to_string()
            } else {
                data.join(f).display().to_string()
            }
        };
        for old in &self.files {
            match now.files.iter().find(|n| n.file == old.file) {
                None => return Some(format!("{}: gone", name(&old.file))),
                Some(n) if n.size != old.size => {
                    return Some(format!(
                        "{}: {} bytes, {} when the run started",
                        name(&old.file),
                        n.size,
                        old.size
                    ))
                }
                Some(n) if n.crc != old.crc => {
                    return Some(format!("{}: its content changed", name(&old.file)))
                }
                Some(_) => {}
            }
        }
        now.files
            .iter()
            .find(|n| !self.files.iter().any(|o| o.file == n.file))
            .map(|n| format!("{}: new since the run started", name(&n.file)))
    }
}

/// Every non-hidden file under `path`.
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let md = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot open dataset", path.display()))?;
    if !md.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for e in std::fs::read_dir(path).with_context(|| format!("{}: cannot list", path.display()))? {
        let e = e.with_context(|| format!("{}: cannot list", path.display()))?;
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        collect(&e.path(), out)?;
    }
    Ok(())
}

fn file_print(path: &Path, file: String) -> Result<FileFingerprint> {
    let read = || -> std::io::Result<(u64, u32)> {
        let mut f = std::fs::File::open(path)?;
        let size = f.metadata()?.len();
        let mut buf = Vec::new();
        let mut take = |f: &mut std::fs::File, at: u64, n: u64| -> std::io::Result<()> {
            f.seek(SeekFrom::Start(at))?;
            f.take(n).read_to_end(&mut buf)?;
            Ok(())
        };
        if size <= 2 * EDGE + SAMPLES * SAMPLE {
            take(&mut f, 0, size)?;
        } else {
            take(&mut f, 0, EDGE)?;
            let span = size - 2 * EDGE;
            for i in 0..SAMPLES {
                take(&mut f, EDGE + span * i / SAMPLES, SAMPLE)?;
            }
            take(&mut f, size - EDGE, EDGE)?;
        }
        Ok((size, igpt_core::crc32(&buf)))
    };
    let (size, crc) = read().with_context(|| format!("{}: cannot read", path.display()))?;
    Ok(FileFingerprint { file, size, crc })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("a")).unwrap();
        std::fs::write(d.join("a/x.bin"), vec![1u8; 300_000]).unwrap();
        std::fs::write(d.join("y.bin"), b"hello").unwrap();
        let before = DataFingerprint::of(d).unwrap();
        assert_eq!(before.files.len(), 2);
        assert_eq!(before.difference(&DataFingerprint::of(d).unwrap(), d), None);
        let mut big = vec![1u8; 300_000];
        big[0] = 2;
        std::fs::write(d.join("a/x.bin"), &big).unwrap();
        let diff = before
            .difference(&DataFingerprint::of(d).unwrap(), d)
            .unwrap();
        assert!(diff.contains("x.bin") && diff.contains("content"), "{diff}");
        std::fs::write(d.join("y.bin"), b"hello!").unwrap();
        std::fs::write(d.join("a/x.bin"), vec![1u8; 300_000]).unwrap();
        let diff = before
            .difference(&DataFingerprint::of(d).unwrap(), d)
            .unwrap();
        assert!(diff.contains("y.bin") && diff.contains("6 bytes"), "{diff}");
        std::fs::write(d.join("y.bin"), b"hello").unwrap();
        std::fs::write(d.join("z.bin"), b"new").unwrap();
        let diff = before
            .difference(&DataFingerprint::of(d).unwrap(), d)
            .unwrap();
        assert!(diff.contains("z.bin") && diff.contains("new"), "{diff}");
    }
}
