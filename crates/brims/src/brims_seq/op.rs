//! The fused sequence pass as a candle custom op (`CustomOp3`): the glue between candle's
//! tensors and the loops (packing and splitting the weights, dtype dispatch, keeping what the
//! forward saved for the backward).

use std::any::Any;
use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::rows::{backward_rows, forward_rows, RowsSaved};
use super::weights::{layer_weights, weight_lens};
use super::Plan;
use crate::config::TieBreak;
use crate::kernels::{contiguous_slice, Real};
use crate::sizes::LayerSizes;

/// The sequence pass as a candle op: args `kv0 [T, B, Hi·(dk+dv)]`, the packed weights
/// `[P]` (every weight flattened, in [`weight_lens`] order), `state0 [B, W]`; output
/// `out [T, B, W]`. Gradients flow to all three.
pub(crate) struct BrimsSeqOp {
    pub sizes: Vec<LayerSizes>,
    pub steps: usize,
    pub batch: usize,
    /// `[T, B]` row-major.
    pub keep: Vec<f64>,
    pub tie_break: TieBreak,
    /// What the forward kept (a `RowsSaved` of the op's float type), taken by the backward.
    saved: Mutex<Option<Box<dyn Any + Send>>>,
}

impl BrimsSeqOp {
    pub fn new(
        sizes: Vec<LayerSizes>,
        steps: usize,
        batch: usize,
        keep: Vec<f64>,
        tie_break: TieBreak,
    ) -> Self {
        BrimsSeqOp {
            sizes,
            steps,
            batch,
            keep,
            tie_break,
            saved: Mutex::new(None),
        }
    }

    fn plan(&self) -> Plan<'_> {
        Plan {
            sizes: &self.sizes,
            steps: self.steps,
            batch: self.batch,
        }
    }

    /// Splits the packed weights into per-weight slices.
    fn split<'a, T>(&self, packed: &'a [T]) -> Result<Vec<&'a [T]>> {
        let lens: Vec<usize> = self
            .sizes
            .iter()
            .enumerate()
            .flat_map(|(l, s)| weight_lens(l, s))
            .collect();
        if lens.iter().sum::<usize>() != packed.len() {
            bail!(
                "brims_seq: {} packed weights, the layers take {}",
                packed.len(),
                lens.iter().sum::<usize>()
            );
        }
        let mut rest = packed;
        Ok(lens
            .iter()
            .map(|&len| {
                let (head, tail) = rest.split_at(len);
                rest = tail;
                head
            })
            .collect())
    }

    fn check(&self, kv0: usize, state0: usize) -> Result<()> {
        let plan = self.plan();
        let want_kv0 = self.steps * self.batch * self.sizes[0].slot_kv_width();
        let want_state = self.batch * plan.width();
        if kv0 != want_kv0 || state0 != want_state || self.keep.len() != self.steps * self.batch {
            bail!(
                "brims_seq: kv0 has {kv0} values (expected {want_kv0}), state0 {state0} \
                 (expected {want_state}), keep {} (expected {})",
                self.keep.len(),
                self.steps * self.batch
            );
        }
        Ok(())
    }

    fn fwd_typed<T: Real + Send + Sync + 'static>(
        &self,
        kv0: &[T],
        packed: &[T],
        state0: &[T],
    ) -> Result<Vec<T>> {
        self.check(kv0.len(), state0.len())?;
        let slices = self.split(packed)?;
        let weights = layer_weights(&self.sizes, &slices)?;
        let (out, saved) = forward_rows(
            &self.plan(),
            &weights,
            kv0,
            state0,
            &self.keep,
            self.tie_break,
        );
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(saved));
        Ok(out)
    }

    fn bwd_typed<T: Real + Send + Sync + 'static>(
        &self,
        kv0: &Tensor,
        packed: &Tensor,
        state0: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed_v = packed.flatten_all()?.to_vec1::<T>()?;
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take();
        let saved = match saved.and_then(|s| s.downcast::<RowsSaved<T>>().ok()) {
            Some(saved) => *saved,
            // Only when one graph is differentiated twice: recompute.
            None => {
                let kv0_v = kv0.flatten_all()?.to_vec1::<T>()?;
                let state0_v = state0.flatten_all()?.to_vec1::<T>()?;
                let slices = self.split(&packed_v)?;
                let weights = layer_weights(&self.sizes, &slices)?;
                forward_rows(
                    &self.plan(),
                    &weights,
                    &kv0_v,
                    &state0_v,
                    &self.keep,
                    self.tie_break,
                )
                .1
            }
        };
        let grad = grad_res.flatten_all()?.to_vec1::<T>()?;
        let slices = self.split(&packed_v)?;
        let weights = layer_weights(&self.sizes, &slices)?;
        let grads = backward_rows(&self.plan(), &weights, &saved, &grad, &self.keep)?;
        let dev = kv0.device();
        let d_packed: Vec<T> = grads.weights.into_iter().flatten().collect();
        Ok((
            Some(Tensor::from_vec(grads.kv0, kv0.shape(), dev)?),
            Some(Tensor::from_vec(d_packed, packed.shape(), dev)?),
            Some(Tensor::from_vec(grads.state0, state0.shape(), dev)?),
        ))
    }
}

impl CustomOp3 for BrimsSeqOp {
    fn name(&self) -> &'static str {
        "brims-seq"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = Shape::from((self.steps, self.batch, self.plan().width()));
        let storage = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(self.fwd_typed::<f32>(
                    contiguous_slice(s1, l1)?,
                    contiguous_slice(s2, l2)?,
                    contiguous_slice(s3, l3)?,
                )?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(self.fwd_typed::<f64>(
                    contiguous_slice(s1, l1)?,
                    contiguous_slice(s2, l2)?,
                    contiguous_slice(s3, l3)?,
                )?)
            }
            _ => bail!(
                "brims_seq: needs f32 or f64 inputs of one dtype, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        kv0: &Tensor,
        packed: &Tensor,
        state0: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match kv0.dtype() {
            DType::F32 => self.bwd_typed::<f32>(kv0, packed, state0, grad_res),
            DType::F64 => self.bwd_typed::<f64>(kv0, packed, state0, grad_res),
            dt => bail!("brims_seq: no backward for {dt:?}"),
        }
    }
}
