//! A JPEG whose entropy-coded scan data stops early, but which still ends with its
//! end-of-image marker, is decoded without an error (the missing blocks come out flat):
//! this check refuses it before decoding.
//!
//! Every block of a sequential (baseline or extended) scan costs at least one DC code and
//! one AC code (an end-of-block or a coefficient), so a scan of `n` blocks needs at least
//! `n · (shortest DC code + shortest AC code)` bits of its Huffman tables. Fewer bytes
//! between the scan header and the next marker (restart markers skipped, stuffed zero
//! bytes counted once) mean the data was cut. Progressive and arithmetic-coded JPEGs are
//! left to the decoder.

use anyhow::{ensure, Result};
use std::path::Path;

/// Frame geometry: width, height, and each component's id and sampling factors.
struct Frame {
    width: usize,
    height: usize,
    components: Vec<(u8, usize, usize)>,
}

/// Refuses a sequential JPEG whose scan data is shorter than its blocks need.
pub fn check_scan_length(path: &Path, b: &[u8]) -> Result<()> {
    let mut frame: Option<Frame> = None;
    // Shortest code length of each Huffman table: [class][id].
    let mut shortest = [[0usize; 4]; 2];
    let mut at = 2;
    while at + 4 <= b.len() {
        if b[at] != 0xff {
            return Ok(());
        }
        let marker = b[at + 1];
        if marker == 0xd9 {
            return Ok(());
        }
        let len = u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
        let Some(seg) = b.get(at + 4..at + 2 + len) else {
            return Ok(());
        };
        match marker {
            0xc0 | 0xc1 if seg.len() >= 6 => {
                let n = seg[5] as usize;
                let comps = (0..n)
                    .filter_map(|i| seg.get(6 + 3 * i..9 + 3 * i))
                    .map(|c| (c[0], (c[1] >> 4) as usize, (c[1] & 15) as usize))
                    .collect();
                frame = Some(Frame {
                    height: u16::from_be_bytes([seg[1], seg[2]]) as usize,
                    width: u16::from_be_bytes([seg[3], seg[4]]) as usize,
                    components: comps,
                });
            }
            0xc2 | 0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf => return Ok(()),
            0xc4 => read_tables(seg, &mut shortest),
            0xda => {
                let Some(f) = &frame else { return Ok(()) };
                let data_start = at + 2 + len;
                let (bytes, next) = entropy_bytes(b, data_start);
                let need = scan_bits(f, seg, &shortest).div_ceil(8);
                ensure!(
                    bytes >= need,
                    "{}: the JPEG scan data stops early ({bytes} bytes where its blocks need at least {need}): the file is damaged",
                    path.display()
                );
                at = next;
                continue;
            }
            _ => {}
        }
        at += 2 + len;
    }
    Ok(())
}

/// Records the shortest code length of each table in a DHT segment.
fn read_tables(seg: &[u8], shortest: &mut [[usize; 4]; 2]) {
    let mut p = 0;
    while p + 17 <= seg.len() {
        let (class, id) = ((seg[p] >> 4) as usize, (seg[p] & 15) as usize);
        let counts = &seg[p + 1..p + 17];
        if class < 2 && id < 4 {
            shortest[class][id] = counts.iter().position(|&c| c > 0).map_or(0, |i| i + 1);
        }
        p += 17 + counts.iter().map(|&c| c as usize).sum::<usize>();
    }
}

/// Least bits a scan's blocks take (0 when a table is unknown).
fn scan_bits(f: &Frame, seg: &[u8], shortest: &[[usize; 4]; 2]) -> usize {
    let ns = seg.first().copied().unwrap_or(0) as usize;
    let hmax = f.components.iter().map(|c| c.1).max().unwrap_or(1).max(1);
    let vmax = f.components.iter().map(|c| c.2).max().unwrap_or(1).max(1);
    let mut bits = 0;
    for i in 0..ns {
        let Some(sel) = seg.get(1 + 2 * i..3 + 2 * i) else {
            return 0;
        };
        let Some(&(_, h, v)) = f.components.iter().find(|c| c.0 == sel[0]) else {
            return 0;
        };
        let (dc, ac) = ((sel[1] >> 4) as usize, (sel[1] & 15) as usize);
        let per_block =
            shortest[0].get(dc).copied().unwrap_or(0) + shortest[1].get(ac).copied().unwrap_or(0);
        let blocks = if ns == 1 {
            (f.width * h).div_ceil(hmax).div_ceil(8) * (f.height * v).div_ceil(vmax).div_ceil(8)
        } else {
            f.width.div_ceil(8 * hmax) * f.height.div_ceil(8 * vmax) * h * v
        };
        bits += blocks * per_block;
    }
    bits
}

/// Bytes of entropy-coded data from `start` to the next marker that is not a restart
/// (a stuffed `FF 00` counts as one byte), and where that marker is.
fn entropy_bytes(b: &[u8], start: usize) -> (usize, usize) {
    let (mut n, mut p) = (0, start);
    while p < b.len() {
        if b[p] == 0xff && p + 1 < b.len() {
            match b[p + 1] {
                0x00 => {
                    n += 1;
                    p += 2;
                }
                0xd0..=0xd7 => p += 2,
                // A fill byte before a marker.
                0xff => p += 1,
                _ => return (n, p),
            }
        } else {
            n += 1;
            p += 1;
        }
    }
    (n, p)
}
