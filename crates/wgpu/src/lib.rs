//! # fastquery-wgpu
//!
//! The wgpu implementation of [`fastquery_backend::Backend`], so that the server also runs on
//! GPUs that CUDA does not reach (Vulkan, Metal, DX12). Sits beside `fastquery-cpu` and
//! `fastquery-cuda` above the backend trait; the binary enables it with the cargo feature `wgpu`.
//!
//! * Kernels are the files of `shaders/` at the workspace root, embedded with `include_str!`
//!   and compiled into pipelines when a backend is created, inside a validation error scope: a
//!   shader that does not compile is a [`BackendError`], never a panic.
//! * Arithmetic is 32-bit only (WGSL has no 64-bit integers without an extension): 64-bit
//!   products from 16-bit halves, Shoup multiplication for fixed operands, a Barrett reduction
//!   of 64-bit accumulators held in two words. Every result is fully reduced, and a fully
//!   reduced residue is unique, so the words are the CPU backend's; the shared conformance
//!   suite checks it.
//! * A software adapter (Mesa's lavapipe) works and is reported as such: CI runs the whole
//!   backend suite and the end-to-end schemes on it.
#![deny(unsafe_code)]

mod backend;

pub use backend::{WgpuBackend, WgpuBuffer, WgpuRing};

/// The shader sources: the shared arithmetic, then one module per kernel family.
pub const SOURCES: [(&str, &str); 7] = [
    ("modarith.wgsl", include_str!("../../../shaders/modarith.wgsl")),
    ("elementwise.wgsl", include_str!("../../../shaders/elementwise.wgsl")),
    ("unary.wgsl", include_str!("../../../shaders/unary.wgsl")),
    ("ntt.wgsl", include_str!("../../../shaders/ntt.wgsl")),
    ("mac.wgsl", include_str!("../../../shaders/mac.wgsl")),
    ("modswitch.wgsl", include_str!("../../../shaders/modswitch.wgsl")),
    ("permute.wgsl", include_str!("../../../shaders/permute.wgsl")),
];
