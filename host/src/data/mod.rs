//! Datasets: CIFAR-10 binary batches, IDX files (MNIST, Fashion-MNIST; plain or `.gz`)
//! and image folders (one subfolder per class), brought to the model's resolution with an
//! area (box) filter and to the palette's channel count.
//!
//! Every problem is an error naming the file: a missing path, a truncated record, a wrong
//! magic number, a file that is not an image, mixed image sizes where one is required.

pub mod fingerprint;
pub mod palette;
pub mod tokenize;

use anyhow::{bail, ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// The training set (`data_batch_*.bin`, `train-*-ubyte`, `train/`).
    Train,
    /// The test set (`test_batch.bin`, `t10k-*-ubyte`, `test/`).
    Test,
}

/// Labelled images of one size, 8 bits per channel, interleaved channels, raster order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `len() * height * width * channels` bytes.
    pub pixels: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u16>,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
}

/// Class names of CIFAR-10, used when no `batches.meta.txt` lies beside the batches.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Class names of Fashion-MNIST.
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where Debian's `dataset-fashion-mnist` package puts the IDX files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of one image.
    pub fn image_len(&self) -> usize {
        self.width * self.height * self.channels
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Images per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// The same images with `channels` channels (RGB to grey by Rec. 601 luma, grey to RGB
    /// by copying).
    pub fn with_channels(self, channels: usize) -> Result<Dataset> {
        if channels == self.channels {
            return Ok(self);
        }
        let pixels = convert_channels(&self.pixels, self.channels, channels)?;
        Ok(Dataset {
            channels,
            pixels,
            ..self
        })
    }

    /// The same images, centre-cropped to a square and area-resized to `side`x`side`.
    pub fn resized(self, side: usize) -> Dataset {
        if self.width == side && self.height == side {
            return self;
        }
        let mut pixels = Vec::with_capacity(self.len() * side * side * self.channels);
        for i in 0..self.len() {
            pixels.extend(square_resize(
                self.image(i),
                self.width,
                self.height,
                self.channels,
                side,
            ));
        }
        Dataset {
            width: side,
            height: side,
            pixels,
            ..self
        }
    }

    /// The first `n` images (all if fewer).
    pub fn truncate(mut self, n: usize) -> Dataset {
        if n < self.len() {
            self.labels.truncate(n);
            self.pixels.truncate(n * self.image_len());
        }
        self
    }
}

/// Converts interleaved pixels between 1 and 3 channels. RGB to grey is
/// `(299 R + 587 G + 114 B + 500) / 1000` (Rec. 601 luma, exact for grey input).
pub fn convert_channels(pixels: &[u8], from: usize, to: usize) -> Result<Vec<u8>> {
    Ok(match (from, to) {
        (a, b) if a == b => pixels.to_vec(),
        (3, 1) => pixels
            .chunks_exact(3)
            .map(|p| {
                ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8
            })
            .collect(),
        (1, 3) => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        (a, b) => bail!("cannot convert {a}-channel pixels to {b} channels"),
    })
}

/// Area (box) resampling of one image to `out_w`x`out_h`: each output pixel is the mean of
/// the input area it covers, partially covered input pixels weighted by their coverage.
/// Exact for integer ratios (28 -> 14 averages 2x2 blocks); the identity when sizes match.
pub fn area_resize(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    // Horizontal pass into f32 rows, then vertical pass.
    let xw = box_weights(w, out_w);
    let yw = box_weights(h, out_h);
    let mut tmp = vec![0f32; h * out_w * c];
    for y in 0..h {
        for (ox, taps) in xw.iter().enumerate() {
            for ch in 0..c {
                let mut acc = 0f32;
                for &(x, wt) in taps {
                    acc += wt * src[(y * w + x) * c + ch] as f32;
                }
                tmp[(y * out_w + ox) * c + ch] = acc;
            }
        }
    }
    let mut out = vec![0u8; out_h * out_w * c];
    for (oy, taps) in yw.iter().enumerate() {
        for ox in 0..out_w {
            for ch in 0..c {
                let mut acc = 0f32;
                for &(y, wt) in taps {
                    acc += wt * tmp[(y * out_w + ox) * c + ch];
                }
                out[(oy * out_w + ox) * c + ch] = (acc + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// For each output index, the input indices it covers and their normalised weights.
fn box_weights(input: usize, output: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let start = o as f64 * scale;
            let end = (o + 1) as f64 * scale;
            let mut taps = Vec::new();
            let mut i = start.floor() as usize;
            while (i as f64) < end && i < input {
                let cover = (end.min(i as f64 + 1.0) - start.max(i as f64)).max(0.0);
                if cover > 1e-9 {
                    taps.push((i, (cover / scale) as f32));
                }
                i += 1;
            }
            taps
        })
        .collect()
}

/// Centre-crops an image to a square (the longer side loses equal margins) and
/// area-resizes it to `side`x`side`.
pub fn square_resize(src: &[u8], w: usize, h: usize, c: usize, side: usize) -> Vec<u8> {
    let s = w.min(h);
    if s == w && s == h {
        return area_resize(src, w, h, c, side, side);
    }
    let (x0, y0) = ((w - s) / 2, (h - s) / 2);
    let mut crop = Vec::with_capacity(s * s * c);
    for y in y0..y0 + s {
        crop.extend_from_slice(&src[(y * w + x0) * c..(y * w + x0 + s) * c]);
    }
    area_resize(&crop, s, s, c, side, side)
}

/// Loads `split` of the dataset at `path`, resized to `side` when given.
///
/// `path` may be a CIFAR-10 `.bin` batch, an IDX images file (its labels file is found by
/// name), or a folder holding CIFAR-10 batches (`data_batch_*.bin` / `test_batch.bin`),
/// IDX files (`train-images-idx3-ubyte[.gz]` / `t10k-images-idx3-ubyte[.gz]` with their
/// labels), or class subfolders of images (under `train/` and `test/` when split; a folder
/// of class subfolders alone is used as is for either split).
pub fn load(path: &Path, split: Split, side: Option<usize>) -> Result<Dataset> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot open dataset", path.display()))?;
    let ds = if meta.is_file() {
        let name = file_name(path);
        if name.ends_with(".bin") {
            load_cifar(&[path.to_path_buf()])?
        } else if name.contains("-images-idx3-ubyte") {
            let labels =
                path.with_file_name(name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte"));
            load_idx(path, &labels)?
        } else {
            bail!(
                "{}: unrecognised dataset file (expected a CIFAR-10 .bin batch or an IDX *-images-idx3-ubyte file)",
                path.display()
            );
        }
    } else {
        load_dir(path, split, side)?
    };
    ensure!(
        !ds.is_empty(),
        "{}: the dataset holds no images",
        path.display()
    );
    Ok(match side {
        Some(s) => ds.resized(s),
        None => ds,
    })
}

/// Refuses a single data file where a command needs a training and a test split: one
/// CIFAR-10 batch or IDX file holds one split, and would be used as both (a test score
/// on the training images). `use_` says what the test split is for, with the flag that
/// does without it.
pub fn ensure_two_splits(path: &Path, use_: &str) -> Result<()> {
    ensure!(
        !path.is_file(),
        "{}: one data file is one split, and this command needs a training and a test split ({use_}); pass the folder holding both (e.g. data_batch_*.bin and test_batch.bin, or train-* and t10k-* IDX files)",
        path.display()
    );
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn load_dir(dir: &Path, split: Split, side: Option<usize>) -> Result<Dataset> {
    // CIFAR-10 batches.
    let mut cifar: Vec<PathBuf> = Vec::new();
    let mut any_cifar = false;
    for entry in read_dir_sorted(dir)? {
        let name = file_name(&entry);
        let is_train = name.starts_with("data_batch_") && name.ends_with(".bin");
        let is_test = name == "test_batch.bin";
        any_cifar |= is_train || is_test;
        if (split == Split::Train && is_train) || (split == Split::Test && is_test) {
            cifar.push(entry);
        }
    }
    if any_cifar {
        ensure!(
            !cifar.is_empty(),
            "{}: CIFAR-10 folder has no {} batch ({})",
            dir.display(),
            split_name(split),
            match split {
                Split::Train => "data_batch_*.bin",
                Split::Test => "test_batch.bin",
            }
        );
        return load_cifar(&cifar);
    }
    // IDX files.
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let idx_any = ["train", "t10k"]
        .iter()
        .any(|p| find_idx(dir, p, "images-idx3").is_some());
    if idx_any {
        let images = find_idx(dir, prefix, "images-idx3").with_context(|| {
            format!(
                "{}: no {prefix}-images-idx3-ubyte[.gz] for the {} split",
                dir.display(),
                split_name(split)
            )
        })?;
        let labels = find_idx(dir, prefix, "labels-idx1").with_context(|| {
            format!(
                "{}: no {prefix}-labels-idx1-ubyte[.gz] beside {}",
                dir.display(),
                images.display()
            )
        })?;
        return load_idx(&images, &labels);
    }
    // Image folders. With train/ and test/, both splits take their labels from one class
    // list: the train split's class folders (a test folder may lack some; one that the
    // train split lacks is an error).
    let sub = dir.join(split_name(split));
    if !sub.is_dir() {
        return load_image_folder(dir, side, None);
    }
    let train = dir.join("train");
    let classes = if train.is_dir() {
        Some(class_folders(&train)?)
    } else {
        None
    };
    load_image_folder(&sub, side, classes.as_deref())
}

/// The class folder names of an image-folder split, sorted.
fn class_folders(root: &Path) -> Result<Vec<String>> {
    Ok(read_dir_sorted(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .map(|p| file_name(&p))
        .collect())
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

fn find_idx(dir: &Path, prefix: &str, kind: &str) -> Option<PathBuf> {
    let plain = dir.join(format!("{prefix}-{kind}-ubyte"));
    let gz = dir.join(format!("{prefix}-{kind}-ubyte.gz"));
    [plain, gz].into_iter().find(|p| p.is_file())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list folder", dir.display()))?
    {
        let entry = entry.with_context(|| format!("{}: cannot list folder", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Bytes of one CIFAR-10 record: a label byte, then 1024 red, 1024 green, 1024 blue.
pub const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// Loads CIFAR-10 binary batches (in the order given).
pub fn load_cifar(files: &[PathBuf]) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let bytes = crate::io::read(f)?;
        ensure!(
            !bytes.is_empty(),
            "{}: empty file, not a CIFAR-10 batch",
            f.display()
        );
        ensure!(
            bytes.len() % CIFAR_RECORD == 0,
            "{}: truncated CIFAR-10 record: {} bytes is not a whole number of {CIFAR_RECORD}-byte records (record {} has {} bytes)",
            f.display(),
            bytes.len(),
            bytes.len() / CIFAR_RECORD,
            bytes.len() % CIFAR_RECORD
        );
        for (i, rec) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
            ensure!(
                rec[0] < 10,
                "{}: record {i} has label {}, CIFAR-10 labels are 0..9",
                f.display(),
                rec[0]
            );
            labels.push(rec[0] as u16);
            let planes = &rec[1..];
            for p in 0..1024 {
                pixels.extend_from_slice(&[planes[p], planes[1024 + p], planes[2048 + p]]);
            }
        }
    }
    let classes = files
        .first()
        .and_then(|f| f.parent())
        .and_then(|d| std::fs::read_to_string(d.join("batches.meta.txt")).ok())
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|c| c.len() == 10)
        .unwrap_or_else(|| CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect());
    Ok(Dataset {
        width: 32,
        height: 32,
        channels: 3,
        pixels,
        labels,
        classes,
    })
}

/// Reads a file, un-gzipping it when it starts with the gzip magic.
/// Reads an IDX file, gzip-compressed or not, reading no more than its header's
/// dimensions promise (a gzip member that inflates past them, or past the memory this
/// machine has, is an error before it is inflated).
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    drop(f);
    if n == 2 && magic == [0x1f, 0x8b] {
        let raw = crate::io::read(path)?;
        let mut dec = flate2::read::MultiGzDecoder::new(&raw[..]);
        let corrupt =
            |e: std::io::Error| anyhow::anyhow!("{}: corrupt gzip data ({e})", path.display());
        // The IDX header: 4 bytes (type, dimension count), then 4 bytes per dimension.
        let mut head = vec![0u8; 4];
        dec.read_exact(&mut head).map_err(corrupt)?;
        let dims = head[3] as usize;
        let mut d = vec![0u8; 4 * dims];
        dec.read_exact(&mut d).map_err(corrupt)?;
        head.extend_from_slice(&d);
        let body = d
            .chunks_exact(4)
            .try_fold(1u64, |a, c| {
                a.checked_mul(u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64)
            })
            .with_context(|| format!("{}: IDX dimensions overflow", path.display()))?;
        let limit = crate::io::available_memory() / 2;
        ensure!(
            body <= limit,
            "{}: the IDX header promises {body} bytes, more than half this machine's available memory ({limit} bytes)",
            path.display()
        );
        let mut out = head;
        (&mut dec)
            .take(body + 1)
            .read_to_end(&mut out)
            .map_err(corrupt)?;
        // parse_idx checks the length; one byte past the promise means trailing data.
        Ok(out)
    } else {
        crate::io::read(path)
    }
}

/// Parses an IDX file of unsigned bytes: returns the dimensions and the data.
fn parse_idx(
    path: &Path,
    bytes: &[u8],
    dims_expected: u8,
    what: &str,
) -> Result<(Vec<usize>, usize)> {
    ensure!(
        bytes.len() >= 4,
        "{}: truncated IDX header ({} bytes)",
        path.display(),
        bytes.len()
    );
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let expected = 0x0800 | dims_expected as u32;
    ensure!(
        magic == expected,
        "{}: wrong IDX magic 0x{magic:08x} for {what} (expected 0x{expected:08x})",
        path.display()
    );
    let header = 4 + 4 * dims_expected as usize;
    ensure!(
        bytes.len() >= header,
        "{}: truncated IDX header ({} bytes)",
        path.display(),
        bytes.len()
    );
    let dims: Vec<usize> = (0..dims_expected as usize)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0; 4])) as usize
        })
        .collect();
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let n = n.with_context(|| format!("{}: IDX dimensions {dims:?} overflow", path.display()))?;
    ensure!(
        bytes.len() == header + n,
        "{}: truncated IDX data: dimensions {dims:?} need {} bytes, the file has {}",
        path.display(),
        header + n,
        bytes.len()
    );
    Ok((dims, header))
}

/// Loads an IDX images file (magic 0x00000803) and its labels file (0x00000801).
pub fn load_idx(images: &Path, labels: &Path) -> Result<Dataset> {
    let ib = read_maybe_gz(images)?;
    let (idims, ih) = parse_idx(images, &ib, 3, "images")?;
    let lb = read_maybe_gz(labels)?;
    let (ldims, lh) = parse_idx(labels, &lb, 1, "labels")?;
    ensure!(
        idims[0] == ldims[0],
        "{}: {} labels for {} images in {}",
        labels.display(),
        ldims[0],
        idims[0],
        images.display()
    );
    ensure!(
        idims[1] > 0 && idims[2] > 0,
        "{}: the IDX images are {}x{} pixels: an image needs at least one",
        images.display(),
        idims[2],
        idims[1]
    );
    let labels_v: Vec<u16> = lb[lh..].iter().map(|&l| l as u16).collect();
    let max = labels_v.iter().copied().max().unwrap_or(0) as usize;
    let lower = images.to_string_lossy().to_lowercase();
    let classes: Vec<String> = if lower.contains("fashion") && max < 10 {
        FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..=max.max(9)).map(|i| i.to_string()).collect()
    };
    Ok(Dataset {
        width: idims[2],
        height: idims[1],
        channels: 1,
        pixels: ib[ih..].to_vec(),
        labels: labels_v,
        classes,
    })
}

/// One image read with the `image` crate, as 8-bit RGB.
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// RGB bytes, raster order.
    pub rgb: Vec<u8>,
}

/// Largest image a command reads: 16384 x 16384 pixels (1 GiB of RGBA at most).
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// Reads an image file (any format the `image` crate decodes here) as RGB. A file cut
/// short is an error (the decoders' partial images are refused), and so are dimensions
/// over [`MAX_IMAGE_SIDE`] (checked before decoding).
pub fn read_image(path: &Path) -> Result<Image> {
    let bytes = crate::io::read(path)?;
    let what = || format!("{}: not a readable image", path.display());
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .with_context(what)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(1 << 30);
    let mut reader = reader;
    // The JPEG decoder fills a file cut short with grey instead of failing: a JPEG is
    // complete only when it ends with its end-of-image marker (trailing zero padding
    // allowed).
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        ensure!(
            end >= 2 && bytes[end - 2..end] == [0xff, 0xd9],
            "{}: the JPEG data ends before its end-of-image marker (the file is cut short)",
            path.display()
        );
    }
    // Likewise a PNG must end with its IEND chunk and a GIF with its trailer byte.
    const IEND: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82];
    if reader.format() == Some(image::ImageFormat::Png) {
        ensure!(
            bytes.ends_with(&IEND),
            "{}: the PNG data ends before its IEND chunk (the file is cut short)",
            path.display()
        );
    }
    if reader.format() == Some(image::ImageFormat::Gif) {
        ensure!(
            bytes.last() == Some(&0x3b),
            "{}: the GIF data ends before its trailer (the file is cut short)",
            path.display()
        );
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        check_jpeg_scan(path, &bytes)?;
    }
    reader.limits(limits);
    let mut decoder = reader.into_decoder().with_context(what)?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    ensure!(
        w > 0 && h > 0,
        "{}: the image is {w}x{h} pixels: an image needs at least one",
        path.display()
    );
    // The decoded image and its RGB copy, both held at once: the decoder's limit covers
    // only the first.
    let pixels = w as u64 * h as u64;
    let decoded = pixels * image::ImageDecoder::color_type(&decoder).bytes_per_pixel() as u64;
    let budget = (1u64 << 30).min(crate::io::available_memory() / 2);
    ensure!(
        decoded + 3 * pixels <= budget,
        "{}: a {w}x{h} image needs {} bytes to decode, more than the {budget} allowed",
        path.display(),
        decoded + 3 * pixels
    );
    image::ImageDecoder::set_limits(&mut decoder, image::Limits::no_limits()).with_context(what)?;
    let img = image::DynamicImage::from_decoder(decoder).with_context(what)?;
    let rgb = img.to_rgb8();
    Ok(Image {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        rgb: rgb.into_raw(),
    })
}

/// Refuses a JPEG whose entropy-coded scan data stops early (the decoder would fill the
/// rest with grey): decoded once more by zune-jpeg in strict mode, which fails on a
/// premature end of the scan, an unexpected marker inside it, or stray bytes.
fn check_jpeg_scan(path: &Path, bytes: &[u8]) -> Result<()> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let side = MAX_IMAGE_SIDE as usize;
    let opts = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(side)
        .set_max_height(side);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    dec.decode_headers()
        .map_err(|e| anyhow::anyhow!("{}: not a readable JPEG: {e}", path.display()))?;
    if let Some(info) = dec.info() {
        let need = info.width as u64 * info.height as u64 * 4;
        ensure!(
            need <= (1u64 << 30).min(crate::io::available_memory() / 2),
            "{}: a {}x{} JPEG is too large to decode here",
            path.display(),
            info.width,
            info.height
        );
    }
    dec.decode().map_err(|e| {
        anyhow::anyhow!(
            "{}: the JPEG scan data is damaged or cut short ({e})",
            path.display()
        )
    })?;
    Ok(())
}

/// Loads a folder of class subfolders (sorted by name; hidden files skipped). Without
/// `side` every image must have the size of the first; with it each is centre-cropped and
/// area-resized as it is read. With `classes` (the class list of the whole dataset) the
/// labels are indices into it, and a subfolder not in it is an error.
pub fn load_image_folder(
    root: &Path,
    side: Option<usize>,
    classes: Option<&[String]>,
) -> Result<Dataset> {
    let mut found = Vec::new();
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut size: Option<(usize, usize, PathBuf)> = None;
    for class_dir in read_dir_sorted(root)?.into_iter().filter(|p| p.is_dir()) {
        let name = file_name(&class_dir);
        let label = match classes {
            Some(list) => list.iter().position(|c| *c == name).with_context(|| {
                format!(
                    "{}: class folder `{name}` is not a class of the train split ({})",
                    class_dir.display(),
                    list.join(", ")
                )
            })?,
            None => found.len(),
        };
        anyhow::ensure!(
            label < u16::MAX as usize,
            "{}: too many class folders",
            root.display()
        );
        let label = label as u16;
        found.push(name);
        for file in read_dir_sorted(&class_dir)? {
            if file.is_dir() {
                continue;
            }
            let img = read_image(&file)?;
            match side {
                Some(s) => pixels.extend(square_resize(&img.rgb, img.width, img.height, 3, s)),
                None => {
                    match &size {
                        None => size = Some((img.width, img.height, file.clone())),
                        Some((w, h, first)) => ensure!(
                            (img.width, img.height) == (*w, *h),
                            "{}: image is {}x{} but {} is {w}x{h}; images of one size are required (pass --side to resize)",
                            file.display(),
                            img.width,
                            img.height,
                            first.display()
                        ),
                    }
                    pixels.extend_from_slice(&img.rgb);
                }
            }
            labels.push(label);
        }
    }
    ensure!(
        !found.is_empty(),
        "{}: no dataset found (expected CIFAR-10 .bin batches, IDX files, or one subfolder of images per class)",
        root.display()
    );
    let classes = classes.map_or(found, |c| c.to_vec());
    let (width, height) = match (side, &size) {
        (Some(s), _) => (s, s),
        (None, Some((w, h, _))) => (*w, *h),
        (None, None) => (0, 0),
    };
    Ok(Dataset {
        width,
        height,
        channels: 3,
        pixels,
        labels,
        classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resize_identity_and_block_means() {
        let src: Vec<u8> = (0..16).map(|v| v * 10).collect();
        assert_eq!(area_resize(&src, 4, 4, 1, 4, 4), src);
        // 4x4 -> 2x2 averages 2x2 blocks: (0+10+40+50)/4 = 25, ...
        assert_eq!(area_resize(&src, 4, 4, 1, 2, 2), vec![25, 45, 105, 125]);
        // 3 -> 2 along a row: [0, 90, 180] -> [(0 + 45)/1.5, (45 + 180)/1.5] = [30, 150].
        assert_eq!(area_resize(&[0, 90, 180], 3, 1, 1, 2, 1), vec![30, 150]);
        // Upsampling repeats pixels.
        assert_eq!(area_resize(&[7, 9], 2, 1, 1, 4, 1), vec![7, 7, 9, 9]);
    }

    #[test]
    fn square_resize_crops_the_centre() {
        // 4 wide, 2 high: the centre 2x2 is columns 1..3.
        let src = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(square_resize(&src, 4, 2, 1, 2), vec![2, 3, 6, 7]);
    }

    #[test]
    fn channel_conversion() {
        assert_eq!(convert_channels(&[10, 20, 30], 3, 1).unwrap(), vec![18]);
        assert_eq!(convert_channels(&[77], 1, 3).unwrap(), vec![77, 77, 77]);
        for v in 0..=255u8 {
            assert_eq!(convert_channels(&[v, v, v], 3, 1).unwrap(), vec![v]);
        }
        assert!(convert_channels(&[1, 2], 2, 1).is_err());
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn a_truncated_image_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 5) as u8, 77])
        });
        for ext in ["jpg", "png", "bmp", "gif", "tiff", "webp"] {
            let full = dir.path().join(format!("full.{ext}"));
            img.save(&full).unwrap();
            assert!(read_image(&full).is_ok(), "{ext}");
            let bytes = std::fs::read(&full).unwrap();
            let half = dir.path().join(format!("half.{ext}"));
            std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
            for cut in [
                bytes.len() / 4,
                bytes.len() / 2,
                bytes.len() * 3 / 4,
                bytes.len() - 2,
            ] {
                std::fs::write(&half, &bytes[..cut]).unwrap();
                let r = read_image(&half);
                assert!(
                    r.is_err(),
                    "{ext}: a file cut at {cut} of {} decoded",
                    bytes.len()
                );
                let e = format!("{:#}", r.err().unwrap());
                assert!(e.contains("half."), "{e}");
            }
        }
    }
}
