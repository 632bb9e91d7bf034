//! AdamW with decoupled weight decay and global-norm clipping, over every parameter of a
//! [`GptParams`] (the class head of a fine-tune included): the moments are a
//! [`GptParams`] of the same structure, weight decay follows [`ParamName::decays`], and
//! each tensor's update is its device's [`Kernels::adamw`] (fused on the CPU, dfdx ops
//! elsewhere and as the reference twin).

use crate::io::meta::AdamConfig;
use crate::nn::{AdamStep, Float, GptParams, Kernels, Mat, Param, ParamName};
use dfdx::prelude::*;

/// AdamW's moments, one pair per parameter.
pub struct AdamW<E: Dtype, D: Storage<E>> {
    /// Settings.
    pub cfg: AdamConfig,
    /// First moments.
    pub m: GptParams<Param<E, D>>,
    /// Second moments.
    pub v: GptParams<Param<E, D>>,
    /// Steps taken.
    pub step: u64,
}

impl<E: Float, D: Device<E>> AdamW<E, D> {
    /// Zero moments for `params`.
    pub fn new(params: &GptParams<Param<E, D>>, cfg: AdamConfig) -> Self {
        let zeros = |_, p: &Param<E, D>| p.device().zeros_like(p.shape());
        AdamW {
            cfg,
            m: params.map(zeros),
            v: params.map(zeros),
            step: 0,
        }
    }

    /// Moments from a checkpoint.
    pub fn from_mats(
        dev: &D,
        cfg: AdamConfig,
        m: &GptParams<Mat>,
        v: &GptParams<Mat>,
        step: u64,
    ) -> Self {
        let t = |_, x: &Mat| {
            dev.tensor_from_vec(
                x.data
                    .iter()
                    .map(|&f| crate::nn::cst::<E>(f as f64))
                    .collect(),
                (x.rows, x.cols),
            )
        };
        AdamW {
            cfg,
            m: m.map(t),
            v: v.map(t),
            step,
        }
    }

    /// The moments as checkpoint tensors.
    pub fn to_mats(&self) -> (GptParams<Mat>, GptParams<Mat>) {
        (self.m.map(|_, x| to_mat(x)), self.v.map(|_, x| to_mat(x)))
    }

    /// The bias-correction factors `1 - β^t` for the step about to be taken.
    pub fn bias_corrections(&self) -> (f64, f64) {
        let t = (self.step + 1) as i32;
        (1.0 - self.cfg.beta1.powi(t), 1.0 - self.cfg.beta2.powi(t))
    }

    /// The gradient scale that clips a global norm `norm` to `cfg.clip`.
    pub fn clip_scale(&self, norm: f64) -> f64 {
        if self.cfg.clip > 0.0 && norm > self.cfg.clip {
            self.cfg.clip / norm
        } else {
            1.0
        }
    }

    /// One AdamW step at learning rate `lr` for every parameter (times
    /// `lr_scale(name)`), with the gradients in `grads`; `fused` picks the device's fused
    /// update where it has one. Returns the global gradient norm before clipping.
    pub fn update(
        &mut self,
        params: &mut GptParams<Param<E, D>>,
        grads: &mut Gradients<E, D>,
        lr: f64,
        lr_scale: impl Fn(ParamName) -> f64,
        fused: bool,
    ) -> f64
    where
        D: Kernels<E>,
    {
        let norm = params
            .iter()
            .map(|(_, p)| D::grad_sq_sum(p, grads, fused))
            .sum::<f64>()
            .sqrt();
        let scale = self.clip_scale(norm);
        let bias_correction = self.bias_corrections();
        self.step += 1;
        let c = self.cfg;
        for (((name, p), (_, m)), (_, v)) in params
            .iter_mut()
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            let lr = lr * lr_scale(name);
            let s = AdamStep {
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                lr,
                weight_decay: if name.decays() { c.weight_decay } else { 0.0 },
                bias_correction,
                scale,
            };
            D::adamw(p, m, v, grads, s, fused);
        }
        norm
    }
}

/// A tensor's values as a [`Mat`].
pub fn to_mat<E: Float, D: Device<E>>(x: &Param<E, D>) -> Mat {
    Mat {
        rows: x.shape().0,
        cols: x.shape().1,
        data: x
            .as_vec()
            .into_iter()
            .map(|e| e.to_f32().unwrap_or(f32::NAN))
            .collect(),
    }
}
