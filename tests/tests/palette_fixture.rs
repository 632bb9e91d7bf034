//! The core tokenizer against HuggingFace ImageGPT's image processor: every palette case
//! in the fixture folder must come out id for id.

use igpt_core::Palette;
use igpt_tests::{cases_with, fixture_dir, Fixture};

fn check_case(f: &Fixture) -> usize {
    let (cshape, centres) = f.u8("clusters_u8").unwrap();
    assert_eq!(
        cshape.len(),
        2,
        "{}: clusters_u8 shape {cshape:?}",
        f.path.display()
    );
    let palette = Palette::new(cshape[1], &centres).unwrap();
    assert_eq!(palette.len(), cshape[0]);
    let (ishape, images) = f.u8("images").unwrap();
    let (eshape, expected) = f.i64("expected.ids").unwrap();
    let (n, pixels) = (ishape[0], ishape[1] * ishape[2]);
    assert_eq!(eshape, vec![n, pixels], "{}", f.path.display());
    let mut tokens = vec![0u16; pixels];
    let mut mismatches = 0;
    for i in 0..n {
        let img = &images[i * pixels * cshape[1]..(i + 1) * pixels * cshape[1]];
        palette.tokenize(img, &mut tokens).unwrap();
        for (j, (&got, &want)) in tokens
            .iter()
            .zip(&expected[i * pixels..(i + 1) * pixels])
            .enumerate()
        {
            if got as i64 != want {
                if mismatches < 5 {
                    eprintln!(
                        "{}: image {i} pixel {j}: got {got}, expected {want}",
                        f.path.display()
                    );
                }
                mismatches += 1;
            }
        }
    }
    println!(
        "{}: {n} images x {pixels} pixels, {} colours: {mismatches} mismatches",
        f.path.display(),
        palette.len()
    );
    assert_eq!(mismatches, 0);
    n * pixels
}

#[test]
fn tokenizer_reproduces_hf_ids_exactly() {
    let cases = cases_with(&["clusters_u8", "images", "expected.ids"]).unwrap();
    let checked: usize = cases.iter().map(check_case).sum();
    assert!(checked > 0);
}

#[test]
fn the_float_clusters_are_the_u8_ones_rescaled() {
    // The fixture's f32 centres are `u8 / 127.5 - 1`: the integer and the normalised
    // distance orders agree, which is why the integer tokenizer is exact.
    for f in cases_with(&["clusters_u8", "clusters"]).unwrap() {
        let (_, u) = f.u8("clusters_u8").unwrap();
        let (_, c) = f.f32("clusters").unwrap();
        for (&a, &b) in u.iter().zip(&c) {
            assert_eq!(a as f32 / 127.5 - 1.0, b);
        }
    }
}

#[test]
fn an_empty_fixture_folder_fails() {
    let empty = tempfile::tempdir().unwrap();
    assert!(igpt_tests::cases_with_in(empty.path(), &["clusters_u8"]).is_err());
    // A folder whose files lack the tensors fails too.
    std::fs::copy(
        fixture_dir().join("tiny.safetensors"),
        empty.path().join("x.safetensors"),
    )
    .ok();
    assert!(igpt_tests::cases_with_in(empty.path(), &["clusters_u8"]).is_err());
}
