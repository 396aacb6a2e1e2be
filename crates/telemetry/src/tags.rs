//! TensorBoard tag names used across the project (CleanRL's, plus BRIMs diagnostics).

/// Raw (unclipped) score of a finished episode.
pub const EPISODIC_RETURN: &str = "charts/episodic_return";
/// Length of a finished episode, in agent steps.
pub const EPISODIC_LENGTH: &str = "charts/episodic_length";
/// SPS: agent steps per second, summed over the envs (CleanRL's unit; one agent step is
/// `frames_per_step` emulator frames).
pub const SPS: &str = "charts/SPS";
/// Current learning rate.
pub const LEARNING_RATE: &str = "charts/learning_rate";
/// Value-function loss.
pub const VALUE_LOSS: &str = "losses/value_loss";
/// Clipped policy-gradient loss.
pub const POLICY_LOSS: &str = "losses/policy_loss";
/// Mean policy entropy.
pub const ENTROPY: &str = "losses/entropy";
/// KL estimate `mean(-log r)`.
pub const OLD_APPROX_KL: &str = "losses/old_approx_kl";
/// KL estimate `mean((r - 1) - log r)`.
pub const APPROX_KL: &str = "losses/approx_kl";
/// Fraction of samples whose ratio was clipped.
pub const CLIPFRAC: &str = "losses/clipfrac";
/// Explained variance of the value predictions.
pub const EXPLAINED_VARIANCE: &str = "losses/explained_variance";
/// Global gradient norm before clipping.
pub const GRAD_NORM: &str = "losses/grad_norm";
/// Gradient norm of the encoder's parameters.
pub const GRAD_NORM_ENCODER: &str = "losses/grad_norm_encoder";
/// Gradient norm of the recurrent core's parameters.
pub const GRAD_NORM_CORE: &str = "losses/grad_norm_core";
/// Gradient norm of the policy and value heads' parameters.
pub const GRAD_NORM_HEADS: &str = "losses/grad_norm_heads";
/// `max |r − 1|` on the first minibatch of an update: ~0 when replay matches acting.
pub const FIRST_RATIO_DEVIATION: &str = "losses/first_ratio_deviation";
/// Image of module activity over an evaluation episode (see `module_activity_image`).
pub const MODULE_ACTIVITY: &str = "brims/module_activity";
/// The effective config, as Markdown text.
pub const CONFIG: &str = "config";

/// Every standard scalar tag, in CleanRL's order.
pub const STANDARD_SCALARS: [&str; 11] = [
    EPISODIC_RETURN,
    EPISODIC_LENGTH,
    SPS,
    LEARNING_RATE,
    VALUE_LOSS,
    POLICY_LOSS,
    ENTROPY,
    OLD_APPROX_KL,
    APPROX_KL,
    CLIPFRAC,
    EXPLAINED_VARIANCE,
];

/// `brims/layer{layer}/module{module}_active_rate`: fraction of steps the module was active.
pub fn module_active_rate(layer: usize, module: usize) -> String {
    format!("brims/layer{layer}/module{module}_active_rate")
}

/// `brims/layer{layer}/null_attention`: histogram of the modules' attention on the null input.
pub fn null_attention(layer: usize) -> String {
    format!("brims/layer{layer}/null_attention")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brims_tags_follow_the_documented_pattern() {
        assert_eq!(module_active_rate(1, 3), "brims/layer1/module3_active_rate");
        assert_eq!(null_attention(0), "brims/layer0/null_attention");
    }
}
