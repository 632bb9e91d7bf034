//! Files the host writes: always atomically (a temporary file in the same folder, then a
//! rename), so an interrupted run never leaves a half-written checkpoint, palette or plot
//! in place of a good one.

pub mod checkpoint;
pub mod hf;
pub mod plot;

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temp file beside it, flushed and synced, then
/// renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    Ok(())
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

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
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
