//! The run lock: a run folder (of `pretrain`, `finetune`, `probe`) is written by one
//! process at a time.
//!
//! The lock is the file `.igpt-lock` in the folder, holding the owner's process id and
//! host name, with an advisory `flock` on it for as long as the owner runs. The kernel
//! drops the `flock` when its process ends however it ends, so a lock file left by a
//! killed process is stale by construction: the next run takes it over and says so. A
//! second process that finds the `flock` held fails naming the folder and the holder.
//! On release (drop, or SIGINT/SIGTERM: [`super::interrupt`]), the lock file is removed, and the folders the lock created are
//! removed again when they stayed empty (a run that failed before writing anything
//! leaves no empty folder behind).

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = ".igpt-lock";

/// Ownership of a run folder, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
    path: PathBuf,
    file: Option<File>,
    /// The lock file's place in the table of files removed on a signal.
    signal_slot: Option<usize>,
    /// Folders this lock created (outermost first), removed on release when empty.
    created: Vec<PathBuf>,
}

impl RunLock {
    /// Takes the lock of `dir`, creating the folder (and missing parents) if needed.
    /// Fails when another live process holds it; takes over (with a note on standard
    /// error) a lock whose process is gone.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        if let Ok(md) = std::fs::metadata(dir) {
            anyhow::ensure!(md.is_dir(), "{}: exists and is not a folder", dir.display());
        }
        let created = missing_folders(dir);
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
        let mut lock = RunLock {
            dir: dir.to_path_buf(),
            path: dir.join(LOCK_FILE),
            file: None,
            signal_slot: None,
            created,
        };
        // A holder may remove the lock file between our open and our flock: then the
        // file we locked is no longer the folder's lock, and we try again.
        for _ in 0..100 {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock.path)
                .with_context(|| format!("{}: cannot create the run lock", lock.path.display()))?;
            if !try_lock(&file) {
                let holder = read_holder(&mut file);
                bail!(
                    "{}: in use by another run ({}); wait for it to end or choose another folder",
                    dir.display(),
                    if holder.is_empty() {
                        "a process starting".to_string()
                    } else {
                        holder
                    }
                );
            }
            if !same_inode(&file, &lock.path) {
                continue;
            }
            let previous = read_holder(&mut file);
            if !previous.is_empty() {
                crate::progress::message(format!(
                    "{}: taking over the run lock of {previous}, which has ended",
                    dir.display()
                ));
            }
            let me = format!("process {} on {}", std::process::id(), host_name());
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| file.write_all(me.as_bytes()))
                .and_then(|_| file.sync_all())
                .with_context(|| format!("{}: cannot write the run lock", lock.path.display()))?;
            lock.file = Some(file);
            lock.signal_slot = super::interrupt::register(&lock.path);
            return Ok(lock);
        }
        bail!("{}: the run lock keeps changing", dir.display())
    }

    /// The folder this lock owns.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        super::interrupt::unregister(self.signal_slot.take());
        if let Some(file) = self.file.take() {
            // Removed while still locked, then unlocked (the flock goes with the handle):
            // a process that opened the old file sees it gone after its flock and retries.
            let _ = std::fs::remove_file(&self.path);
            drop(file);
        }
        for d in self.created.iter().rev() {
            // Fails (and is meant to) when the folder is not empty.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// `dir` and those of its ancestors that do not exist, outermost first.
fn missing_folders(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty())
        .take_while(|a| std::fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// Who holds a lock file: its text, at most one short line.
fn read_holder(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.rewind();
    let _ = file.take(200).read_to_string(&mut s);
    s.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(unix)]
fn try_lock(file: &File) -> bool {
    use std::os::unix::io::AsRawFd;
    // Safety: flock on a file descriptor this File owns.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> bool {
    true
}

#[cfg(unix)]
fn same_inode(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// This machine's name (`gethostname`), or `localhost`.
fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // Safety: the buffer and its length are valid; the result is NUL-terminated
        // within it or truncated (handled by the search below).
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if n > 0 {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
    }
    "localhost".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_then_release_then_takeover() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/run");
        let first = RunLock::acquire(&dir).unwrap();
        assert!(dir.join(LOCK_FILE).exists());
        let second = RunLock::acquire(&dir).unwrap_err().to_string();
        assert!(second.contains("in use by another run"), "{second}");
        assert!(second.contains(&format!("process {}", std::process::id())));
        drop(first);
        // Nothing was written: the lock removed the folders it created.
        assert!(!tmp.path().join("a").exists());
        // A lock file left by a dead process (no flock held) is taken over.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), "process 999999 on elsewhere").unwrap();
        let third = RunLock::acquire(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
        assert!(text.starts_with(&format!("process {}", std::process::id())));
        std::fs::write(dir.join("kept"), "x").unwrap();
        drop(third);
        assert!(!dir.join(LOCK_FILE).exists());
        assert!(dir.join("kept").exists(), "a folder with files stays");
    }

    #[test]
    fn a_file_is_not_a_run_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let e = RunLock::acquire(&f).unwrap_err().to_string();
        assert!(e.contains("not a folder"), "{e}");
    }
}
