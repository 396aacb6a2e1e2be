//! The sizes of the BRIMs layers, derived once from the config: the one home of every width
//! the reference step ([`crate::brims`]) and the fused loops ([`crate::brims_seq`]) use.
//! Spec notation (§1) in backticks.

use crate::config::BrimsConfig;

/// Sizes of one BRIMs layer `l`, known before any parameter exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LayerSizes {
    /// Hidden size `N_l`: `h` and `c` are each this wide.
    pub hidden: usize,
    /// Module count `M_l`.
    pub modules: usize,
    /// Module size `d_l = N_l / M_l`.
    pub module_size: usize,
    /// Active modules per step `k_l`.
    pub active: usize,
    /// The layer whose previous-step `h` is this layer's top-down slot, if any (§4.1).
    pub top_down: Option<usize>,
    /// Widths of the real input slots (§4.1): bottom-up, then top-down if any. The null slot,
    /// first in attention order, has no width: its key and value are exactly zero.
    pub slot_widths: Vec<usize>,
    /// Input attention (§4.2): heads.
    pub input_heads: usize,
    /// Input attention: key size per head.
    pub input_key: usize,
    /// Input attention: value size per head.
    pub input_value: usize,
    /// Communication attention (§4.5): heads.
    pub comm_heads: usize,
    /// Communication attention: key (and query) size per head.
    pub comm_key: usize,
    /// Communication attention: value size per head.
    pub comm_value: usize,
    /// Whether each slot's input is normalised before its keys and values are projected.
    pub slot_norm: bool,
}

impl LayerSizes {
    /// The sizes of every layer of `cfg` on inputs of width `input_size`, bottom first.
    pub fn of_config(cfg: &BrimsConfig, input_size: usize) -> Vec<LayerSizes> {
        let n_layers = cfg.layers.len();
        (0..n_layers)
            .map(|l| {
                let lc = cfg.layers[l];
                let top_down = cfg.top_down_source(l);
                let bottom_up = if l == 0 {
                    input_size
                } else {
                    cfg.layers[l - 1].hidden_size
                };
                let mut slot_widths = vec![bottom_up];
                if let Some(src) = top_down {
                    slot_widths.push(cfg.layers[src].hidden_size);
                }
                let module_size = lc.hidden_size / lc.modules;
                LayerSizes {
                    hidden: lc.hidden_size,
                    modules: lc.modules,
                    module_size,
                    active: lc.active,
                    top_down,
                    slot_widths,
                    input_heads: cfg.input_attention.heads,
                    input_key: cfg.input_attention.key_size,
                    input_value: cfg.input_attention.value_size.unwrap_or(module_size),
                    comm_heads: cfg.comm_attention.heads,
                    comm_key: cfg.comm_attention.key_size,
                    comm_value: cfg.comm_attention.value_size,
                    slot_norm: cfg.slot_norm,
                }
            })
            .collect()
    }

    /// Real input slots `S` (bottom-up, top-down); attention runs over `S + 1` with null.
    pub fn slots(&self) -> usize {
        self.slot_widths.len()
    }

    /// FLOPs of one step of this layer for one env (2 per multiply-add): input attention
    /// (per-module queries, each slot's keys and values, scores and read over `S + 1` slots),
    /// the `M` module LSTMs, and communication attention (per-module queries, keys and values,
    /// `M × M` scores and read, the shared output and gate layers applied per module).
    pub fn forward_flops(&self) -> u64 {
        let u = |n: usize| n as u64;
        let (m, d) = (u(self.modules), u(self.module_size));
        let (hi, dk, dv) = (u(self.input_heads), u(self.input_key), u(self.input_value));
        let (hc, ck, cv) = (u(self.comm_heads), u(self.comm_key), u(self.comm_value));
        let slots = u(self.slots()) + 1;
        let input_kv: u64 = self
            .slot_widths
            .iter()
            .map(|&w| u(w) * hi * (dk + dv))
            .sum();
        let input_attention = m * d * hi * dk + input_kv + m * slots * hi * (dk + dv);
        let lstms = m * (hi * dv + d) * 4 * d;
        let communication =
            m * d * hc * (2 * ck + cv) + m * m * hc * (ck + cv) + m * hc * cv * 2 * d;
        2 * (input_attention + lstms + communication)
    }

    /// `Hi·dk`: one module's input-attention query, all heads.
    pub fn query_width(&self) -> usize {
        self.input_heads * self.input_key
    }

    /// `Hi·(dk + dv)`: one slot's keys (all heads) then values (all heads).
    pub fn slot_kv_width(&self) -> usize {
        self.input_heads * (self.input_key + self.input_value)
    }

    /// `Hi·dv`: one module's attention read, its LSTM's input.
    pub fn read_width(&self) -> usize {
        self.input_heads * self.input_value
    }

    /// `4d`: one module's LSTM gates `i, f, g, o`.
    pub fn gate_width(&self) -> usize {
        4 * self.module_size
    }

    /// `Hc·(2dk + dv)`: one module's communication queries, keys, then values.
    pub fn comm_qkv_width(&self) -> usize {
        self.comm_heads * (2 * self.comm_key + self.comm_value)
    }

    /// `Hc·dv`: one module's communication read `u_j`.
    pub fn comm_read_width(&self) -> usize {
        self.comm_heads * self.comm_value
    }
}
