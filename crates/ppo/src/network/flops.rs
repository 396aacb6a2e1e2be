//! FLOPs the network performs, counted from its layers' shapes (2 per multiply-add; the
//! elementwise work of activations, gates, softmax and the loss is left out), so that
//! `brims bench train` can read its speed against the machine's peak.

use super::{ActorCritic, Encoder};

/// FLOPs of one forward pass for one observation (one env, one step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardFlops {
    /// Encoder, core and both heads.
    pub total: u64,
    /// The encoder's first layer: its backward needs no input gradient (the input is the
    /// observation), so training skips that share of its backward.
    pub first_layer: u64,
}

impl ForwardFlops {
    /// FLOPs per agent step of PPO training with `update_epochs` epochs: one acting forward,
    /// then per epoch a replay forward and a backward. A layer's backward costs twice its
    /// forward (the input gradient and the weight gradient), but the first layer's has only
    /// the weight gradient.
    pub fn per_training_step(&self, update_epochs: usize) -> u64 {
        let backward = 2 * self.total - self.first_layer;
        self.total + update_epochs as u64 * (self.total + backward)
    }
}

/// `[out, in]` weight applied to one row.
fn linear_flops(layer: &candle_nn::Linear) -> u64 {
    2 * layer.weight().elem_count() as u64
}

impl ActorCritic {
    /// The network's forward FLOPs per observation, from its layers' shapes and
    /// [`ActorCritic::obs_shape`].
    pub fn forward_flops(&self) -> ForwardFlops {
        let mut layers: Vec<u64> = Vec::new();
        match &self.encoder {
            Encoder::Mlp { layers: mlp, .. } => layers.extend(mlp.iter().map(linear_flops)),
            Encoder::NatureCnn { convs, fc, .. } => {
                // [C, H, W] observations; valid convolutions, as fastconv computes them.
                let (mut h, mut w) = match self.obs_shape[..] {
                    [_, h, w] => (h, w),
                    _ => (0, 0),
                };
                for conv in convs {
                    let dims = conv.weight().dims(); // [out, in, kh, kw]
                    let stride = conv.stride();
                    h = (h.saturating_sub(dims[2])) / stride + 1;
                    w = (w.saturating_sub(dims[3])) / stride + 1;
                    let per_pixel = 2 * conv.weight().elem_count() as u64;
                    layers.push(per_pixel * (h * w) as u64);
                }
                layers.push(linear_flops(fc));
            }
        }
        let first_layer = layers.first().copied().unwrap_or(0);
        let core = self.core.as_ref().map_or(0, |c| c.forward_flops());
        let heads = linear_flops(&self.policy) + linear_flops(&self.value);
        ForwardFlops {
            total: layers.iter().sum::<u64>() + core + heads,
            first_layer,
        }
    }
}

#[cfg(test)]
mod tests {
    use brims::{CoreConfig, LstmConfig};
    use candle_core::Device;
    use candle_nn::VarMap;
    use rand::SeedableRng;

    use super::*;
    use crate::NetworkConfig;

    fn atari_net(frames: usize, core: Option<CoreConfig>) -> ActorCritic {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        ActorCritic::new(
            &NetworkConfig::atari(core),
            &[frames, 84, 84],
            4,
            &mut VarMap::new(),
            &Device::Cpu,
            &mut rng,
        )
        .unwrap()
    }

    /// The Nature CNN on one 84×84 frame: 32@8×8/4 → 20×20, 64@4×4/2 → 9×9, 64@3×3/1 → 7×7,
    /// 3136 → 512; the 13.8 MFLOP that issue 26 derived by hand. Heads: 512 → 4 and → 1.
    #[test]
    fn the_nature_cnn_counts_each_layer_over_its_output_pixels() {
        let conv1 = 2 * 32 * 8 * 8 * 20 * 20;
        let cnn = conv1 + 2 * 64 * (32 * 4 * 4) * 9 * 9 + 2 * 64 * (64 * 3 * 3) * 7 * 7;
        let fc = 2 * 3136 * 512;
        let heads = 2 * 512 * 4 + 2 * 512;
        let flops = atari_net(1, None).forward_flops();
        assert_eq!(flops.first_layer, conv1);
        assert_eq!(flops.total, cnn + fc + heads);
        assert_eq!(cnn + fc, 13_770_752);
        // Four stacked frames: only the first layer reads more.
        let stacked = atari_net(4, None).forward_flops();
        assert_eq!(stacked.first_layer, 4 * conv1);
        assert_eq!(stacked.total - flops.total, 3 * conv1);
    }

    /// The core adds its own count; heads then read its output.
    #[test]
    fn the_core_and_heads_add_their_counts_and_training_counts_epochs() {
        let plain = atari_net(1, None).forward_flops();
        let lstm = atari_net(1, Some(CoreConfig::Lstm(LstmConfig::new(128)))).forward_flops();
        let heads_512 = 2 * 512 * 5;
        let heads_128 = 2 * 128 * 5;
        let core = 2 * 4 * 128 * (512 + 128);
        assert_eq!(lstm.total, plain.total - heads_512 + heads_128 + core);
        let epochs = 4;
        let backward = 2 * lstm.total - lstm.first_layer;
        assert_eq!(
            lstm.per_training_step(epochs),
            lstm.total + 4 * (lstm.total + backward)
        );
    }
}
