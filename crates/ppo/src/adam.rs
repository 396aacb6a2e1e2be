//! Adam (Kingma & Ba) with torch's update rule and moments we can checkpoint.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::error::Result;

/// Adam over every variable of a [`VarMap`] (in name order), with global grad-norm clipping.
pub(crate) struct Adam {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Optimiser steps taken (torch's `state['step']`).
    pub(crate) step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    pub(crate) fn new(varmap: &VarMap, eps: f64) -> Result<Self> {
        let mut vars: Vec<(String, Var)> = match varmap.data().lock() {
            Ok(d) => d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(|(_, v)| v.zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Adam {
            vars,
            m,
            v,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps,
        })
    }

    /// Global L2 norm of all gradients (what `clip_grad_norm_` returns) and the L2 norm of each
    /// part of the network: `[encoder, core, heads]` by variable name (`encoder.*`, `core.*`,
    /// the rest).
    pub(crate) fn grad_norm(&self, grads: &GradStore) -> Result<(f64, [f64; 3])> {
        let mut parts = [0f64; 3];
        for (name, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let sq = f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
                let part = if name.starts_with("encoder.") {
                    0
                } else if name.starts_with("core.") {
                    1
                } else {
                    2
                };
                parts[part] += sq;
            }
        }
        let global = parts.iter().sum::<f64>().sqrt();
        Ok((global, parts.map(f64::sqrt)))
    }

    /// Scales gradients by `min(1, max_norm / (norm + 1e-6))` (torch's clip_grad_norm_), then
    /// takes one Adam step with learning rate `lr`.
    pub(crate) fn clipped_step(
        &mut self,
        grads: &GradStore,
        norm: f64,
        max_norm: f64,
        lr: f64,
    ) -> Result<()> {
        let clip = (max_norm / (norm + 1e-6)).min(1.0);
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients may carry the graph that produced them; the moments must not keep it
            // (every minibatch's whole backward graph) alive.
            let g = g.detach();
            let g = if clip < 1.0 { (g * clip)? } else { g };
            let m = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let denom = ((v.sqrt()? / bc2.sqrt())? + self.eps)?;
            let update = ((&m / denom)? * (lr / bc1))?;
            var.set(&(var.as_tensor().detach() - update)?)?;
            self.m[i] = m.detach();
            self.v[i] = v.detach();
        }
        Ok(())
    }

    /// The moments as named tensors (`adam.m.<var>`, `adam.v.<var>`).
    pub(crate) fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("adam.m.{name}"), self.m[i].clone());
            out.insert(format!("adam.v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Names and shapes of the moment tensors, for validating a checkpoint before loading it.
    pub(crate) fn expected(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for (name, var) in &self.vars {
            out.push((format!("adam.m.{name}"), var.dims().to_vec()));
            out.push((format!("adam.v.{name}"), var.dims().to_vec()));
        }
        out
    }

    /// Replaces the moments from `tensors` (already validated) and the step count.
    pub(crate) fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> Result<()> {
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if let (Some(m), Some(v)) = (
                tensors.get(&format!("adam.m.{name}")),
                tensors.get(&format!("adam.v.{name}")),
            ) {
                self.m[i] = m.clone();
                self.v[i] = v.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Minimising `x²` from x = 1 with lr 0.1: the first bias-corrected step is
    /// `0.1 · 2 / (2 + 1e-5)` ≈ 0.1; the second uses m̂ = (0.9·0.2·2… ) — checked by recomputing
    /// torch's formulas in f64.
    #[test]
    fn matches_torch_adam_formulas() {
        let varmap = VarMap::new();
        let x = varmap
            .get(
                1,
                "x",
                candle_nn::Init::Const(1.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let mut adam = Adam::new(&varmap, 1e-5).unwrap();
        let (mut xr, mut m, mut v) = (1f64, 0f64, 0f64);
        for step in 1..=3 {
            let loss = x.sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let (norm, _) = adam.grad_norm(&grads).unwrap();
            assert!((norm - 2.0 * xr).abs() < 1e-5);
            adam.clipped_step(&grads, norm, 100.0, 0.1).unwrap();
            let g = 2.0 * xr;
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let (bc1, bc2) = (1.0 - 0.9f64.powi(step), 1.0 - 0.999f64.powi(step));
            xr -= 0.1 / bc1 * m / (v.sqrt() / bc2.sqrt() + 1e-5);
            let got = f64::from(x.to_vec1::<f32>().unwrap()[0]);
            assert!((got - xr).abs() < 1e-5, "step {step}: {got} vs {xr}");
        }
    }

    /// Gradients are scaled by max_norm / norm when the norm exceeds max_norm: with Adam's
    /// scale invariance the first step is unchanged, but the moments hold the clipped gradient.
    #[test]
    fn clipping_scales_the_gradient() {
        let varmap = VarMap::new();
        let x = varmap
            .get(
                2,
                "x",
                candle_nn::Init::Const(3.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let mut adam = Adam::new(&varmap, 1e-5).unwrap();
        let grads = x.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let (norm, _) = adam.grad_norm(&grads).unwrap(); // |(6, 6)| = 8.485
        adam.clipped_step(&grads, norm, 0.5, 0.1).unwrap();
        let m = adam.state_tensors()["adam.m.x"].to_vec1::<f32>().unwrap();
        let clipped = 6.0 * 0.5 / (norm + 1e-6);
        assert!((f64::from(m[0]) - 0.1 * clipped).abs() < 1e-6, "{m:?}");
    }
}
