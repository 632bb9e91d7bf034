//! Files: checkpoints ([`checkpoint`]), the typed run metadata inside them ([`meta`]),
//! probe heads ([`probe_head`]), HuggingFace import ([`hf`]) and export ([`hf_export`]),
//! plots ([`plot`]) and PNGs, the output-path guard ([`guard`]) and the run lock
//! ([`lock`]).
//!
//! Every file the host writes goes through [`write_atomic`] (a temporary file in the same
//! folder, then a rename, then a sync of the folder), so an interrupted run never leaves
//! a half-written checkpoint, palette or plot in place of a good one. A command that
//! writes several files runs inside [`write_together`]: its writes are held until it
//! succeeds, then written as temporaries and renamed together, so a command that fails
//! replaces none of its earlier outputs.

pub mod checkpoint;
pub mod guard;
pub mod hf;
pub mod hf_export;
pub mod interrupt;
pub mod lock;
pub mod meta;
pub mod plot;
pub mod probe_head;

use anyhow::{Context, Result};
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One held output of [`write_together`]: the bytes to write, or `None` to remove a file
/// a previous run of the command left and this one does not write.
type Held = (PathBuf, Option<Vec<u8>>);

thread_local! {
    /// The outputs held by the [`write_together`] running on this thread, if any.
    static HELD: RefCell<Option<Vec<Held>>> = const { RefCell::new(None) };
}

/// Runs `f` with every [`write_atomic`] (and [`remove_output`]) of this thread held
/// back; when `f` succeeds, writes them all as temporaries, then renames them into place.
/// When `f` fails, or one temporary cannot be written, nothing is written or removed.
/// Each held path is checked ([`check_output`]) when it is written by `f`. Nested calls
/// join the outermost one.
pub fn write_together<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let outermost = HELD.with(|h| {
        let mut h = h.borrow_mut();
        let free = h.is_none();
        if free {
            *h = Some(Vec::new());
        }
        free
    });
    if !outermost {
        return f();
    }
    let result = f();
    let held = HELD.with(|h| h.borrow_mut().take()).unwrap_or_default();
    let value = result?;
    commit(&held)?;
    Ok(value)
}

/// Holds `entry` when a [`write_together`] runs on this thread (replacing an earlier
/// entry of the same path); gives it back otherwise.
fn hold(entry: Held) -> Option<Held> {
    HELD.with(|h| match h.borrow_mut().as_mut() {
        Some(list) => {
            list.retain(|(p, _)| p != &entry.0);
            list.push(entry);
            None
        }
        None => Some(entry),
    })
}

/// Writes held outputs: every temporary first (removed again if one fails), then the
/// renames, the removals, and a sync of each folder.
fn commit(held: &[Held]) -> Result<()> {
    let mut staged: Vec<(interrupt::Temporary, &Path)> = Vec::new();
    let mut in_place: Vec<(&Path, &[u8])> = Vec::new();
    for (path, bytes) in held {
        let Some(bytes) = bytes else { continue };
        let step = if is_special(path) {
            in_place.push((path, bytes));
            Ok(())
        } else {
            write_temporary(path, bytes).map(|tmp| staged.push((tmp, path)))
        };
        // On failure the temporaries staged so far are removed as they drop.
        step?;
    }
    let mut dirs: Vec<&Path> = staged.iter().map(|(_, p)| folder_of(p)).collect();
    for (tmp, path) in staged {
        tmp.rename_to(path)
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    for (path, bytes) in in_place {
        write_atomic(path, bytes)?;
    }
    for (path, bytes) in held {
        if bytes.is_none() {
            remove_leftover(path)?;
        }
    }
    dirs.dedup();
    for d in dirs {
        sync_folder(d);
    }
    Ok(())
}

/// Removes `path` if it is a file: an output of an earlier run of a command that this
/// run does not write (so that it is not taken for one of this run's). Inside
/// [`write_together`], held until the other outputs are written.
pub fn remove_output(path: &Path) -> Result<()> {
    match hold((path.to_path_buf(), None)) {
        None => Ok(()),
        Some(_) => remove_leftover(path),
    }
}

fn remove_leftover(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_file() => std::fs::remove_file(path)
            .with_context(|| format!("{}: cannot remove this earlier output", path.display())),
        _ => Ok(()),
    }
}

/// Checks that `path` can be written as an output: not a folder, in a folder that
/// exists (and, on Unix, is writable). Commands call it for every output before their
/// first write.
pub fn check_output(path: &Path) -> Result<()> {
    if let Ok(md) = std::fs::metadata(path) {
        anyhow::ensure!(!md.is_dir(), "{}: is a folder, not a file", path.display());
        if !md.is_file() {
            return Ok(());
        }
    }
    let dir = folder_of(path);
    let md = std::fs::metadata(dir).map_err(|_| {
        anyhow::anyhow!(
            "{}: the folder {} does not exist",
            path.display(),
            dir.display()
        )
    })?;
    anyhow::ensure!(
        md.is_dir(),
        "{}: {} is not a folder",
        path.display(),
        dir.display()
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
            // Safety: a NUL-terminated path; access only reads it.
            let ok = unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0;
            anyhow::ensure!(
                ok,
                "{}: the folder {} is not writable",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// The folder a file path is in (`.` for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An existing target that is not a regular file or folder (`/dev/null`, a FIFO): written
/// in place, never replaced.
fn is_special(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|md| !md.is_dir() && !md.is_file())
}

/// Syncs a folder, so that a rename into it survives a power cut (best effort: some
/// file systems refuse to sync a folder).
fn sync_folder(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Writes `bytes` to `path` atomically: a temp file beside it, flushed and synced, then
/// renamed over `path`. A target that exists and is not a regular file (a character
/// device such as `/dev/null`, a FIFO, `/dev/stdout`) is written in place instead, so
/// it is never replaced by a regular file. The temporary name stays within the
/// file-system's 255-byte limit, and temporaries of the same target left by a killed
/// process are removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Ok(md) = std::fs::metadata(path) {
        anyhow::ensure!(!md.is_dir(), "{}: is a folder, not a file", path.display());
    }
    if HELD.with(|h| h.borrow().is_some()) {
        check_output(path)?;
        hold((path.to_path_buf(), Some(bytes.to_vec())));
        return Ok(());
    }
    if is_special(path) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        return f
            .write_all(bytes)
            .and_then(|_| f.flush())
            .with_context(|| format!("{}: cannot write", path.display()));
    }
    write_temporary(path, bytes)?
        .rename_to(path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    sync_folder(folder_of(path));
    Ok(())
}

/// Writes `bytes` to a new temporary beside `path` (flushed and synced) and returns it;
/// removes the temporaries of `path` that killed processes left.
fn write_temporary(path: &Path, bytes: &[u8]) -> Result<interrupt::Temporary> {
    let dir = folder_of(path);
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let prefix = temp_prefix(&name.to_string_lossy());
    remove_stale_temporaries(dir, &prefix);
    let tmp = interrupt::Temporary::new(dir.join(format!("{prefix}{}.tmp", std::process::id())));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(tmp.path())?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    // On failure the temporary is removed as it drops.
    result.with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(tmp)
}

/// The start of a target's temporary names (`.{name}.`, then the pid and `.tmp`): a
/// long name is replaced by its CRC so that the whole stays under 255 bytes.
fn temp_prefix(name: &str) -> String {
    if name.len() + 32 <= 255 {
        format!(".{name}.")
    } else {
        format!(".igpt-{:08x}.", igpt_core::crc32(name.as_bytes()))
    }
}

/// Removes `{prefix}{pid}.tmp` files in `dir` whose process is gone (Linux: no
/// `/proc/{pid}`); elsewhere, nothing.
fn remove_stale_temporaries(dir: &Path, prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(prefix)) else {
            continue;
        };
        let Some(pid) = rest
            .strip_suffix(".tmp")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Encodes an 8-bit image (1 channel grey or 3 channels RGB, row-major, interleaved) as
/// PNG and writes it atomically.
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
) -> Result<()> {
    use image::{codecs::png::PngEncoder, ExtendedColorType, ImageEncoder};
    let color = match channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        c => anyhow::bail!("{}: cannot write a PNG of {c} channels", path.display()),
    };
    anyhow::ensure!(
        pixels.len() == width * height * channels,
        "{}: image buffer has {} bytes, expected {}",
        path.display(),
        pixels.len(),
        width * height * channels
    );
    let mut buf = Vec::new();
    PngEncoder::new(&mut buf)
        .write_image(pixels, width as u32, height as u32, color)
        .with_context(|| format!("{}: cannot encode PNG", path.display()))?;
    write_atomic(path, &buf)
}

/// Reads a whole file, naming it in the error. A regular file larger than the memory
/// available is refused before reading; a device or pipe (`/dev/zero`) is read up to
/// 1 GiB, then refused.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let md = std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
    anyhow::ensure!(!md.is_dir(), "{}: is a folder, not a file", path.display());
    if md.is_file() {
        let avail = available_memory();
        anyhow::ensure!(
            md.len() <= avail,
            "{}: {} bytes, more than the {avail} bytes of memory available",
            path.display(),
            md.len()
        );
        return std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()));
    }
    read_limited(path, 1 << 30)
}

/// Memory this machine has available now (Linux: `MemAvailable`), or 8 GiB where it
/// cannot be read: the bound commands check their estimates against.
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024)
}

/// Fails with one line when `needed` bytes (what a command estimates it will allocate)
/// exceed the available memory; `fix` says which flag to lower.
pub fn ensure_memory(needed: u64, fix: &str) -> Result<()> {
    let avail = available_memory();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    anyhow::ensure!(
        needed <= avail,
        "needs ~{:.1} GiB; at most {:.1} GiB available: {fix}",
        gib(needed),
        gib(avail)
    );
    Ok(())
}

/// Reads a whole file of at most `max` bytes; a longer one (or an endless stream such as
/// `/dev/zero`) is an error naming the file, read no further than `max + 1` bytes.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut out = Vec::new();
    f.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    anyhow::ensure!(
        out.len() as u64 <= max,
        "{}: larger than {max} bytes, too large for this kind of file",
        path.display()
    );
    Ok(out)
}

/// Makes glibc's allocator keep freed memory for reuse instead of returning large blocks
/// to the kernel: training allocates and frees the same large activations every step,
/// and without this each step pays fresh zeroed pages (page faults were 16% of a
/// training profile; see bench/RESULTS.md). A no-op on other platforms.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Safety: mallopt only changes allocator tuning parameters; it is called before
        // any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

/// Writes rows of equally sized square RGB images (`side`x`side`, enlarged by pixel
/// repetition to about 112 pixels) as one PNG grid with 4-pixel white gaps.
pub fn write_image_grid(path: &Path, rows: &[Vec<Vec<u8>>], side: usize) -> Result<()> {
    anyhow::ensure!(
        !rows.is_empty() && side > 0,
        "{}: nothing to draw",
        path.display()
    );
    let scale = (112 / side).max(1);
    let cell = side * scale;
    let gap = 4;
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(1);
    let (w, h) = (cols * (cell + gap) + gap, rows.len() * (cell + gap) + gap);
    let mut img = vec![255u8; w * h * 3];
    for (ri, row) in rows.iter().enumerate() {
        for (ci, rgb) in row.iter().enumerate() {
            anyhow::ensure!(rgb.len() == side * side * 3, "image of the wrong size");
            let (x0, y0) = (gap + ci * (cell + gap), gap + ri * (cell + gap));
            for y in 0..cell {
                for x in 0..cell {
                    let s = ((y / scale) * side + x / scale) * 3;
                    let d = ((y0 + y) * w + x0 + x) * 3;
                    img[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
                }
            }
        }
    }
    write_png(path, w, h, 3, &img)
}

/// Lays decoded images in one row, each enlarged by pixel repetition to about 128 pixels.
pub fn write_image_row(path: &Path, images: &[(usize, usize, Vec<u8>)]) -> Result<()> {
    anyhow::ensure!(!images.is_empty(), "{}: nothing to draw", path.display());
    let (w, h) = (images[0].0, images[0].1);
    let scale = (128 / w.max(h)).max(1);
    let gap = 4;
    let (cw, ch) = (w * scale, h * scale);
    let total_w = images.len() * cw + (images.len() - 1) * gap;
    let mut out = vec![255u8; total_w * ch * 3];
    for (i, (_, _, rgb)) in images.iter().enumerate() {
        let x0 = i * (cw + gap);
        for y in 0..ch {
            for x in 0..cw {
                let s = ((y / scale) * w + x / scale) * 3;
                let d = (y * total_w + x0 + x) * 3;
                out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
            }
        }
    }
    write_png(path, total_w, ch, 3, &out)
}
