//! The PPO loss (Schulman et al. 2017, eq. 7 and 9), term by term in CleanRL's order and names.

use candle_core::Tensor;

use crate::error::Result;

/// What one minibatch's loss is computed from; every tensor is `[M]` f32 (M = minibatch size).
#[derive(Clone, Copy, Debug)]
pub struct LossInputs<'a> {
    /// `log π_θ(a_t | s_t)` under the current parameters (differentiable).
    pub newlogprob: &'a Tensor,
    /// Entropy of `π_θ(· | s_t)` (differentiable).
    pub entropy: &'a Tensor,
    /// `V_θ(s_t)` (differentiable).
    pub newvalue: &'a Tensor,
    /// `log π_θ_old(a_t | s_t)` stored while acting.
    pub logprobs: &'a Tensor,
    /// GAE advantages `Â_t` (not yet normalised).
    pub advantages: &'a Tensor,
    /// Returns `Â_t + V_old(s_t)`, the value target.
    pub returns: &'a Tensor,
    /// `V_θ_old(s_t)` stored while acting.
    pub values: &'a Tensor,
}

/// The PPO loss terms of one minibatch. The optimised loss is [`LossParts::total`].
#[derive(Clone, Debug)]
pub struct LossParts {
    /// `−L^CLIP`: mean of `max(−Â·r, −Â·clip(r, 1−ε, 1+ε))`, `r = exp(log π_θ − log π_old)`. Scalar.
    pub pg_loss: Tensor,
    /// `½·mean((V − R)²)`, or with value clipping `½·mean(max((V − R)², (V_old + clip(V − V_old, −ε, ε) − R)²))`. Scalar.
    pub v_loss: Tensor,
    /// Mean policy entropy `S[π_θ]`. Scalar.
    pub entropy: Tensor,
    /// `mean((r − 1) − log r)`, the low-variance KL(π_old‖π_θ) estimator.
    pub approx_kl: f64,
    /// `mean(−log r)`, the naive KL estimator.
    pub old_approx_kl: f64,
    /// Fraction of samples with `|r − 1| > ε`.
    pub clipfrac: f64,
}

impl LossParts {
    /// `pg_loss − c₂·entropy + c₁·v_loss` (paper eq. 9, as a loss to minimise). Scalar.
    pub fn total(&self, ent_coef: f64, vf_coef: f64) -> Result<Tensor> {
        let ent = (&self.entropy * ent_coef)?;
        let v = (&self.v_loss * vf_coef)?;
        Ok(((&self.pg_loss - ent)? + v)?)
    }
}

/// `(x − mean) / (std + 1e-8)` with the unbiased std (torch's default), over all of `x` `[M]`.
pub fn normalize_advantages(x: &Tensor) -> Result<Tensor> {
    let n = x.elem_count();
    let mean = x.mean_all()?;
    let centered = x.broadcast_sub(&mean)?;
    let var = (centered.sqr()?.sum_all()? / (n.saturating_sub(1).max(1)) as f64)?;
    let std = (var.sqrt()? + 1e-8)?;
    Ok(centered.broadcast_div(&std)?)
}

/// The PPO loss of one minibatch, line by line as CleanRL's `ppo_atari_lstm.py`.
pub fn ppo_loss(
    x: &LossInputs,
    clip_coef: f64,
    clip_vloss: bool,
    norm_adv: bool,
) -> Result<LossParts> {
    let logratio = (x.newlogprob - x.logprobs)?;
    let ratio = logratio.exp()?;

    // No gradient flows through the diagnostics.
    let (logratio_d, ratio_d) = (logratio.detach(), ratio.detach());
    let old_approx_kl = logratio_d.neg()?.mean_all()?.to_scalar::<f32>()? as f64;
    let approx_kl = ((&ratio_d - 1.0)? - &logratio_d)?
        .mean_all()?
        .to_scalar::<f32>()? as f64;
    let clipfrac = (&ratio_d - 1.0)?
        .abs()?
        .gt(clip_coef)?
        .to_dtype(candle_core::DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()? as f64;

    let mb_advantages = if norm_adv {
        normalize_advantages(x.advantages)?
    } else {
        x.advantages.clone()
    };

    // Policy loss
    let pg_loss1 = (mb_advantages.neg()? * &ratio)?;
    let pg_loss2 = (mb_advantages.neg()? * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)?)?;
    let pg_loss = pg_loss1.maximum(&pg_loss2)?.mean_all()?;

    // Value loss
    let v_loss = if clip_vloss {
        let v_loss_unclipped = (x.newvalue - x.returns)?.sqr()?;
        let v_clipped = (x.values + (x.newvalue - x.values)?.clamp(-clip_coef, clip_coef)?)?;
        let v_loss_clipped = (v_clipped - x.returns)?.sqr()?;
        let v_loss_max = v_loss_unclipped.maximum(&v_loss_clipped)?;
        (v_loss_max.mean_all()? * 0.5)?
    } else {
        ((x.newvalue - x.returns)?.sqr()?.mean_all()? * 0.5)?
    };

    let entropy = x.entropy.mean_all()?;
    Ok(LossParts {
        pg_loss,
        v_loss,
        entropy,
        approx_kl,
        old_approx_kl,
        clipfrac,
    })
}

/// `1 − Var(returns − values) / Var(returns)` (population variances); NaN when `Var(returns)` = 0.
pub fn explained_variance(values: &[f32], returns: &[f32]) -> f64 {
    let var = |xs: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = xs.collect();
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n
    };
    let var_y = var(&mut returns.iter().map(|&y| f64::from(y)));
    if var_y == 0.0 {
        return f64::NAN;
    }
    let var_err = var(&mut returns
        .iter()
        .zip(values)
        .map(|(&y, &p)| f64::from(y) - f64::from(p)));
    1.0 - var_err / var_y
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }
    fn s(x: &Tensor) -> f64 {
        x.to_scalar::<f32>().unwrap() as f64
    }

    /// Two samples, ε = 0.2, by hand:
    /// r = [e^0.5 ≈ 1.6487, e^−0.5 ≈ 0.6065], Â = [1, −1] (no normalisation).
    /// pg: sample 0: max(−1.6487, −1.2) = −1.2; sample 1: max(0.6065, 0.8) = 0.8 → mean −0.2.
    /// value (clipped): V = [1.5, 0], V_old = [1, 1], R = [2, 0]:
    ///   unclipped (0.25, 0), clipped V = [1.2, 0.8] → (0.64, 0.64); max (0.64, 0.64) → ½·0.64 = 0.32.
    /// unclipped value loss: ½·mean(0.25, 0) = 0.0625.
    /// old_approx_kl = mean(−0.5, 0.5) = 0; approx_kl = mean(e^0.5 − 1.5, e^−0.5 − 0.5) ≈ 0.12763;
    /// clipfrac = 1 (both |r − 1| > 0.2).
    #[test]
    fn loss_terms_match_hand_computation() {
        let x = LossInputs {
            newlogprob: &t(&[-0.5, -1.5]),
            entropy: &t(&[0.3, 0.5]),
            newvalue: &t(&[1.5, 0.0]),
            logprobs: &t(&[-1.0, -1.0]),
            advantages: &t(&[1.0, -1.0]),
            returns: &t(&[2.0, 0.0]),
            values: &t(&[1.0, 1.0]),
        };
        let p = ppo_loss(&x, 0.2, true, false).unwrap();
        assert!((s(&p.pg_loss) - (-0.2)).abs() < 1e-5);
        assert!((s(&p.v_loss) - 0.32).abs() < 1e-5);
        assert!((s(&p.entropy) - 0.4).abs() < 1e-6);
        assert!(p.old_approx_kl.abs() < 1e-6);
        let kl = ((0.5f64.exp() - 1.5) + ((-0.5f64).exp() - 0.5)) / 2.0;
        assert!((p.approx_kl - kl).abs() < 1e-5);
        assert_eq!(p.clipfrac, 1.0);
        let total = s(&p.total(0.01, 0.5).unwrap());
        assert!((total - (-0.2 - 0.004 + 0.16)).abs() < 1e-5);

        let p = ppo_loss(&x, 0.2, false, false).unwrap();
        assert!((s(&p.v_loss) - 0.0625).abs() < 1e-6);
    }

    /// With normalisation Â = [1, −1] becomes [0.7071, −0.7071] (unbiased std √2), so at ratio 1
    /// pg_loss = −mean(Â) = 0 and its gradient is −Â/M.
    #[test]
    fn normalised_advantages_have_zero_mean_unit_std() {
        let a = normalize_advantages(&t(&[1.0, -1.0, 3.0, 5.0]))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mean: f32 = a.iter().sum::<f32>() / 4.0;
        let var: f32 = a.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 3.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{a:?}");
    }

    /// The surrogate's gradient is zero for samples clipped on the profitable side.
    #[test]
    fn clipped_samples_have_no_policy_gradient() {
        let newlogprob = candle_core::Var::from_slice(&[-0.5f32, -1.0], 2, &Device::Cpu).unwrap();
        let zeros = t(&[0.0, 0.0]);
        let x = LossInputs {
            newlogprob: newlogprob.as_tensor(),
            entropy: &zeros,
            newvalue: &zeros,
            logprobs: &t(&[-1.0, -1.0]),
            advantages: &t(&[1.0, 1.0]),
            returns: &zeros,
            values: &zeros,
        };
        let p = ppo_loss(&x, 0.2, false, false).unwrap();
        let g = p.pg_loss.backward().unwrap();
        let g = g
            .get(newlogprob.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // sample 0: r = 1.65 > 1.2 with Â > 0 → clipped, no gradient; sample 1: r = 1 → −Â·r/M = −0.5.
        assert!(g[0].abs() < 1e-7 && (g[1] + 0.5).abs() < 1e-6, "{g:?}");
    }

    #[test]
    fn explained_variance_by_hand() {
        // returns [1, 2, 3] (var 2/3), errors [0, 0, 1] (var 2/9) → 1 − 1/3.
        let ev = explained_variance(&[1.0, 2.0, 2.0], &[1.0, 2.0, 3.0]);
        assert!((ev - 2.0 / 3.0).abs() < 1e-9);
        assert!(explained_variance(&[0.0, 1.0], &[1.0, 1.0]).is_nan());
    }
}
