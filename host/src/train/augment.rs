//! Fine-tuning augmentation on token grids: the paper's pad-and-random-crop and horizontal
//! flip. At 14x14 a crop of a one-pixel padding is a shift of -1, 0 or +1 pixel on each
//! axis. Tokens are per pixel, so shifting tokens with the background colour's token as
//! the padding is the same as shifting the pixels with a black border and tokenizing.

use rand::Rng;

/// `img` (a `side` x `side` grid in raster order) shifted by `dx` columns and `dy` rows
/// (cells moved out are dropped, cells uncovered take `fill`), then mirrored left to right
/// when `flip`.
pub fn shift_flip(
    img: &[u16],
    side: usize,
    dx: isize,
    dy: isize,
    flip: bool,
    fill: u16,
) -> Vec<u16> {
    let s = side as isize;
    let mut out = vec![fill; img.len()];
    for y in 0..s {
        for x in 0..s {
            let (sx, sy) = (x - dx, y - dy);
            if (0..s).contains(&sx) && (0..s).contains(&sy) {
                let col = if flip { s - 1 - x } else { x };
                out[(y * s + col) as usize] = img[(sy * s + sx) as usize];
            }
        }
    }
    out
}

/// One random augmentation of `img`: a shift of up to one pixel on each axis and a flip
/// with probability 1/2, drawn from `rng` (so a resumed run draws the same ones).
pub fn augment<R: Rng>(img: &[u16], side: usize, fill: u16, rng: &mut R) -> Vec<u16> {
    let dx = rng.gen_range(-1..=1);
    let dy = rng.gen_range(-1..=1);
    let flip = rng.gen_bool(0.5);
    shift_flip(img, side, dx, dy, flip, fill)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_fill_and_flips() {
        // 3x3: 1 2 3 / 4 5 6 / 7 8 9
        let img: Vec<u16> = (1..=9).collect();
        assert_eq!(shift_flip(&img, 3, 0, 0, false, 0), img);
        assert_eq!(
            shift_flip(&img, 3, 1, 0, false, 0),
            [0, 1, 2, 0, 4, 5, 0, 7, 8]
        );
        assert_eq!(
            shift_flip(&img, 3, 0, -1, false, 0),
            [4, 5, 6, 7, 8, 9, 0, 0, 0]
        );
        assert_eq!(
            shift_flip(&img, 3, 0, 0, true, 0),
            [3, 2, 1, 6, 5, 4, 9, 8, 7]
        );
        assert_eq!(
            shift_flip(&img, 3, -1, 1, true, 7),
            [7, 7, 7, 7, 3, 2, 7, 6, 5]
        );
    }

    #[test]
    fn draws_every_shift_and_both_flips() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let img: Vec<u16> = (0..16).collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            seen.insert(augment(&img, 4, 99, &mut rng));
        }
        assert_eq!(seen.len(), 18, "9 shifts x 2 flips");
    }
}
