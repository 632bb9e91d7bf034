//! Dataset loaders on real data, and palette fitting on real images.

use igpt::data::palette::{self, FitOptions};
use igpt::data::{self, Split};
use igpt_tests::{data_dir, in_ci};
use std::path::Path;

fn cifar_dir() -> std::path::PathBuf {
    data_dir().join("cifar10-sample")
}

#[test]
fn cifar_sample_labels_and_pixels() {
    let ds = data::load(&cifar_dir(), Split::Test, None).unwrap();
    let labels: Vec<u16> = ds.labels.clone();
    assert_eq!(
        labels,
        [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    );
    assert_eq!(
        (ds.width, ds.height, ds.channels, ds.len()),
        (32, 32, 3, 20)
    );
    assert_eq!(ds.classes[3], "cat");
    // The planar record (R plane, G plane, B plane) is interleaved: check pixel (0, 0) and
    // the last pixel of image 0 against the raw bytes.
    let raw = std::fs::read(cifar_dir().join("test_batch.bin")).unwrap();
    assert_eq!(ds.image(0)[..3], [raw[1], raw[1 + 1024], raw[1 + 2048]]);
    assert_eq!(ds.image(0)[3 * 1023..], [raw[1024], raw[2048], raw[3072]]);
    // A direct file path loads the same.
    let f = data::load(&cifar_dir().join("test_batch.bin"), Split::Test, None).unwrap();
    assert_eq!(f, ds);
    // Resizing to the model's side keeps labels and gives side² pixels.
    let small = ds.clone().resized(8).with_channels(1).unwrap();
    assert_eq!(small.pixels.len(), 20 * 64);
    assert_eq!(small.labels, ds.labels);
}

#[test]
fn fashion_mnist_full_dataset() {
    let dir = Path::new(data::FASHION_MNIST_DIR);
    if !dir.is_dir() {
        assert!(
            !in_ci(),
            "CI must install dataset-fashion-mnist ({} is missing)",
            dir.display()
        );
        println!(
            "SKIPPED: {} is absent (apt-get install -y dataset-fashion-mnist)",
            dir.display()
        );
        return;
    }
    let train = data::load(dir, Split::Train, None).unwrap();
    let test = data::load(dir, Split::Test, None).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));
    assert_eq!((train.width, train.height, train.channels), (28, 28, 1));
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    assert_eq!(train.classes[9], "Ankle boot");
    // Not all one value: real images.
    let img = train.image(0);
    assert!(img.contains(&0) && img.iter().any(|&p| p > 200));
}

#[test]
fn kmeans_palette_beats_the_uniform_grid_on_cifar() {
    let ds = data::load(&cifar_dir(), Split::Test, None).unwrap();
    let opts = FitOptions {
        k: 512,
        iters: 30,
        sample: usize::MAX,
        seed: 0,
    };
    let (fitted, stats) = palette::fit(&ds.pixels, 3, opts, false).unwrap();
    let grid = palette::uniform_grid(3, 8).unwrap();
    let mse_fit = palette::quantization_mse(&fitted, &ds.pixels);
    let mse_grid = palette::quantization_mse(&grid, &ds.pixels);
    println!(
        "20 CIFAR images ({} pixels): k-means 512 mse {mse_fit:.3} per channel ({} iterations, {} re-seeded) vs 8x8x8 grid {mse_grid:.3}",
        stats.pixels, stats.iters, stats.reseeded
    );
    assert_eq!(fitted.len(), 512);
    assert!(mse_fit < mse_grid, "k-means {mse_fit} vs grid {mse_grid}");
}
