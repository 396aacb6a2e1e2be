//! Conv2d as im2col + gemm with a hand-written backward, for fast CPU training.
