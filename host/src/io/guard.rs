//! The output-path guard every writing command uses: an output must not be one of the
//! command's inputs (compared by canonical path and, on Unix, by file identity), so no
//! command destroys what it reads.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The same file, by device and inode where the platform has them, else by canonical
/// path. A path that does not exist is the same as nothing.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            // Character devices (/dev/null, a terminal) are legal outputs for any input.
            if !x.is_file() || !y.is_file() {
                return false;
            }
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Fails when an output is one of the inputs (or two outputs are one file).
pub fn ensure_distinct<'a>(
    outputs: impl IntoIterator<Item = &'a PathBuf>,
    inputs: impl IntoIterator<Item = &'a PathBuf>,
) -> Result<()> {
    let outputs: Vec<&PathBuf> = outputs.into_iter().collect();
    let inputs: Vec<&PathBuf> = inputs.into_iter().collect();
    for (i, o) in outputs.iter().enumerate() {
        for input in &inputs {
            if same_file(o, input) {
                bail!(
                    "{}: is also an input of this command ({}); choose another output",
                    o.display(),
                    input.display()
                );
            }
        }
        for other in &outputs[i + 1..] {
            if same_file(o, other) {
                bail!(
                    "{}: named as two outputs; choose distinct outputs",
                    o.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_is_not_an_output() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        let dotted = dir.path().join(".").join("a");
        let b = dir.path().join("b");
        assert!(ensure_distinct([&dotted], [&a]).is_err());
        assert!(ensure_distinct([&b], [&a]).is_ok());
        // A hard link is the same file under another name.
        let link = dir.path().join("link");
        std::fs::hard_link(&a, &link).unwrap();
        assert!(ensure_distinct([&link], [&a]).is_err());
        assert!(
            ensure_distinct([&PathBuf::from("/dev/null")], [&PathBuf::from("/dev/null")]).is_ok()
        );
    }
}
