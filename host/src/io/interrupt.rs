//! Files to remove when the process is interrupted (SIGINT, SIGTERM, SIGHUP): the
//! temporaries of atomic writes in flight and the run lock.
//!
//! A [`Temporary`] is a file being written beside its target; while it exists its path
//! sits in a fixed table that the signal handler reads. The handler (installed by
//! [`remove_on_signal`]) unlinks every path in the table, then ends the process with the
//! signal's default action, so an interrupted command leaves no hidden temporary and no
//! lock behind. The table is static (no allocation in the handler): paths longer than a
//! slot, or more files at once than slots, are simply not removed on a signal (a later
//! write of the same target removes a dead process's temporaries anyway).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

const SLOTS: usize = 16;
const PATH_MAX: usize = 4096;
const FREE: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

struct Slot {
    state: AtomicU8,
    path: std::cell::UnsafeCell<[u8; PATH_MAX]>,
}

// Safety: a slot's bytes are written only by the thread that moved its state from FREE
// to WRITING, and read (by the handler) only in state READY.
unsafe impl Sync for Slot {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    state: AtomicU8::new(FREE),
    path: std::cell::UnsafeCell::new([0; PATH_MAX]),
};
static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

/// Puts `path` in the table; returns its slot, or `None` when it does not fit.
pub fn register(path: &Path) -> Option<usize> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        if bytes.len() >= PATH_MAX || bytes.contains(&0) {
            return None;
        }
        for (i, slot) in TABLE.iter().enumerate() {
            if slot
                .state
                .compare_exchange(FREE, WRITING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // Safety: this thread owns the slot (state WRITING).
                let buf = unsafe { &mut *slot.path.get() };
                buf[..bytes.len()].copy_from_slice(bytes);
                buf[bytes.len()] = 0;
                slot.state.store(READY, Ordering::Release);
                return Some(i);
            }
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Takes a slot out of the table.
pub fn unregister(slot: Option<usize>) {
    if let Some(i) = slot {
        TABLE[i].state.store(FREE, Ordering::Release);
    }
}

/// Installs the handler of SIGINT, SIGTERM and SIGHUP (once, at the start of `main`).
pub fn remove_on_signal() {
    #[cfg(unix)]
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // Safety: the handler only calls async-signal-safe functions (unlink, signal,
        // raise) on static, NUL-terminated buffers.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    for slot in &TABLE {
        if slot.state.load(Ordering::Acquire) == READY {
            // Safety: a READY slot holds a NUL-terminated path.
            unsafe {
                libc::unlink((*slot.path.get()).as_ptr().cast());
            }
        }
    }
    // Safety: restoring the default action and re-raising ends the process as the
    // signal would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// A file being written beside its target: removed when dropped before
/// [`Temporary::rename_to`], and by the signal handler while it exists.
#[derive(Debug)]
pub struct Temporary {
    path: PathBuf,
    slot: Option<usize>,
    renamed: bool,
}

impl Temporary {
    /// Registers `path` (about to be created).
    pub fn new(path: PathBuf) -> Temporary {
        let slot = register(&path);
        Temporary {
            path,
            slot,
            renamed: false,
        }
    }

    /// The temporary's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary to `target`; on failure it is removed (when dropped).
    pub fn rename_to(mut self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.renamed = true;
        // A signal between the rename and here unlinks a name that no longer exists
        // (temporary names carry this process's id).
        unregister(self.slot.take());
        Ok(())
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        unregister(self.slot.take());
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_is_removed_unless_renamed() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a.tmp");
        std::fs::write(&a, "x").unwrap();
        drop(Temporary::new(a.clone()));
        assert!(!a.exists());
        let b = tmp.path().join("b.tmp");
        std::fs::write(&b, "y").unwrap();
        let t = Temporary::new(b.clone());
        assert!(t.slot.is_some());
        t.rename_to(&tmp.path().join("b")).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("b")).unwrap(), b"y");
    }
}
