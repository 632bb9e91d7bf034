//! Finite-difference gradient check of the dfdx model, in f64, on a tiny config: for
//! every parameter tensor, entries spread over the tensor, for both objectives.

use dfdx::prelude::*;
use igpt::nn::{Gpt, GptParams, Objective, ParamName};
use igpt::train::{loss, make_batch, Batch};
use igpt_core::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_values(config: &Config, seed: u64) -> GptParams<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    GptParams::shapes(config, None).map(|name, &(r, c)| {
        (0..r * c)
            .map(|_| {
                let n: f64 = rng.gen_range(-1.0..1.0);
                if name.is_gain() {
                    1.0 + 0.2 * n
                } else {
                    0.4 * n
                }
            })
            .collect()
    })
}

fn loss_of(dev: &Cpu, config: Config, values: &GptParams<Vec<f64>>, batch: &Batch) -> f64 {
    let gpt = Gpt::<f64, Cpu>::from_values(dev, config, values).unwrap();
    igpt::train::scalar(loss::<f64, Cpu, NoneTape>(&gpt, batch))
}

/// `values` with entry `j` of parameter `name` moved by `h`.
fn nudged(values: &GptParams<Vec<f64>>, name: ParamName, j: usize, h: f64) -> GptParams<Vec<f64>> {
    values.map(|n, v| {
        let mut v = v.clone();
        if n == name {
            v[j] += h;
        }
        v
    })
}

fn check(objective: Objective) {
    let config = Config::new(6, 3, 8, 2, 2).unwrap();
    let dev = Cpu::seed_from_u64(0);
    let values = random_values(&config, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let imgs: Vec<Vec<u16>> = (0..2)
        .map(|_| (0..9).map(|_| rng.gen_range(0..6)).collect())
        .collect();
    let refs: Vec<&[u16]> = imgs.iter().map(|v| v.as_slice()).collect();
    let batch = make_batch(&refs, config.sos(), objective, &mut rng);

    let gpt = Gpt::<f64, Cpu>::from_values(&dev, config, &values).unwrap();
    let grads = loss::<f64, Cpu, OwnedTape<f64, Cpu>>(&gpt, &batch).backward();
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for (name, p) in gpt.params.iter() {
        let analytic = grads.get(p).as_vec();
        let n = analytic.len();
        // Up to 12 entries spread over the tensor, first and last included.
        let picks: Vec<usize> = (0..12.min(n))
            .map(|j| j * (n - 1) / (12.min(n) - 1).max(1))
            .collect();
        let mut tensor_worst: f64 = 0.0;
        for &j in &picks {
            let plus = nudged(&values, name, j, h);
            let minus = nudged(&values, name, j, -h);
            let numeric = (loss_of(&dev, config, &plus, &batch)
                - loss_of(&dev, config, &minus, &batch))
                / (2.0 * h);
            let a = analytic[j];
            let err = (a - numeric).abs() / (1e-6 + a.abs().max(numeric.abs()));
            tensor_worst = tensor_worst.max(err);
            assert!(
                (a - numeric).abs() <= 1e-8 + 1e-5 * a.abs().max(numeric.abs()),
                "{objective:?} {name}[{j}]: analytic {a:e} vs numeric {numeric:e}"
            );
        }
        let nonzero = analytic.iter().any(|&g| g != 0.0);
        println!(
            "{objective:?} {name}: {} entries, worst relative error {tensor_worst:.1e}",
            picks.len()
        );
        // Every tensor takes part (BERT's SOS row of wte is the exception: unused).
        assert!(nonzero, "{objective:?} {name}: all-zero gradient");
        worst = worst.max(tensor_worst);
    }
    println!("{objective:?}: worst relative error over all tensors {worst:.1e}");
}

#[test]
fn gradients_match_finite_differences_ar() {
    check(Objective::Ar);
}

#[test]
fn gradients_match_finite_differences_bert() {
    check(Objective::Bert);
}
