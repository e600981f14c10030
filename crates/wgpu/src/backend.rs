//! The backend: device memory, the ring tables on the device, and one dispatch (or a few, in
//! one submission) per operation. No `unsafe`: wgpu validates every binding.

use std::sync::{Arc, Mutex, mpsc};

use fastquery_backend::{Backend, BackendError, BackendInfo, MacDims, RingContext, Shape};
use fastquery_math::Modulus;
use wgpu::util::DeviceExt;

use crate::SOURCES;

/// Invocations per workgroup of the strided kernels (`@workgroup_size(256)`).
const WG: u32 = 256;
/// Invocations per workgroup of the multiply-accumulate (`@workgroup_size(64)` in mac.wgsl).
const MAC_WG: u32 = 64;
/// Rows per invocation tile of the multiply-accumulate (MAC_ROWS in mac.wgsl).
const MAC_ROWS: usize = 8;
/// Most limbs modulus switching handles (MAX_LIMBS in modswitch.wgsl).
const MAX_LIMBS: usize = 32;
/// WebGPU's guaranteed maximum of workgroups per dispatch dimension.
const MAX_GROUPS: u32 = 65_535;

/// The uniform block of every kernel (`Params` in modarith.wgsl).
type Params = [u32; 12];

fn dev(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("wgpu: {what}: {e}"))
}

fn unavailable(reason: impl Into<String>) -> BackendError {
    BackendError::Unavailable { backend: "wgpu", reason: reason.into() }
}

/// A device buffer of `u32` words (`None` when empty: nothing binds a zero-sized buffer).
#[derive(Debug)]
pub struct WgpuBuffer {
    buf: Option<wgpu::Buffer>,
    len: usize,
}

/// One compute pipeline and the layout its bind groups follow.
#[derive(Debug)]
struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// A ring's tables on the device.
#[derive(Debug)]
pub struct WgpuRing {
    n: usize,
    log_n: u32,
    limbs: usize,
    moduli: wgpu::Buffer,
    /// floor(2^64 / p) as (low, high) words per limb.
    barrett: wgpu::Buffer,
    lazy: wgpu::Buffer,
    fwd: wgpu::Buffer,
    fwd_shoup: wgpu::Buffer,
    inv: wgpu::Buffer,
    inv_shoup: wgpu::Buffer,
    /// (N^-1, Shoup companion) per limb.
    ninv: wgpu::Buffer,
    /// (p_last^-1 mod p_i, Shoup companion) at `last * limbs + i` (modulus switching).
    ms: wgpu::Buffer,
    host_moduli: Vec<Modulus>,
    /// Forward and inverse NTT with the row in workgroup memory, when it fits.
    shared: Option<(Kernel, Kernel)>,
}

/// How a binding is declared in a shader.
#[derive(Clone, Copy)]
enum Slot {
    ReadWrite,
    Read,
    Uniform,
}

/// One binding of a dispatch: a buffer, or the kernel's parameters (uploaded as a uniform).
enum Bind<'a> {
    Buf(&'a wgpu::Buffer),
    Params(Params),
}

/// One dispatch: kernel, bindings in binding order, workgroups.
struct Step<'a> {
    kernel: &'a Kernel,
    binds: Vec<Bind<'a>>,
    groups: (u32, u32, u32),
}

#[derive(Debug)]
struct Kernels {
    add: Kernel,
    sub: Kernel,
    difference: Kernel,
    mul: Kernel,
    monomial: Kernel,
    neg: Kernel,
    scalar_mul: Kernel,
    ntt_forward_stage: Kernel,
    ntt_inverse_stage: Kernel,
    ntt_scale: Kernel,
    mac: Kernel,
    mod_switch: Kernel,
    gather: Kernel,
    decompose: Kernel,
}

/// The wgpu backend on one adapter.
#[derive(Debug)]
pub struct WgpuBackend {
    device: wgpu::Device,
    queue: wgpu::Queue,
    adapter: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    /// The first error wgpu reported outside an error scope (checked after every operation).
    errors: Arc<Mutex<Option<String>>>,
    k: Kernels,
}

const ELEMENTWISE: &[Slot] = &[Slot::ReadWrite, Slot::Read, Slot::Read, Slot::Uniform, Slot::Read];
const UNARY: &[Slot] = &[Slot::ReadWrite, Slot::Read, Slot::Uniform, Slot::Read];
const NTT: &[Slot] = &[Slot::ReadWrite, Slot::Read, Slot::Read, Slot::Read, Slot::Read, Slot::Uniform];
const MAC: &[Slot] =
    &[Slot::ReadWrite, Slot::Read, Slot::Read, Slot::Read, Slot::Read, Slot::Read, Slot::Uniform];
const MODSWITCH: &[Slot] = &[Slot::ReadWrite, Slot::Read, Slot::Read, Slot::Read, Slot::Uniform];
const PERMUTE: &[Slot] = MODSWITCH;

/// The WGSL of one kernel family: the shared arithmetic, then the family's file.
fn source(file: &str) -> String {
    let (_, common) = SOURCES[0];
    let (_, text) = SOURCES.iter().find(|(name, _)| *name == file).expect("a listed shader file");
    format!("{common}\n{text}")
}

impl WgpuBackend {
    /// Opens the first high-performance adapter (any backend wgpu was built with; the
    /// environment variable `WGPU_BACKEND` narrows it, for example to `vulkan`) and builds
    /// every pipeline. No adapter, or one that cannot run the kernels, is
    /// [`BackendError::Unavailable`]; a shader that does not validate is
    /// [`BackendError::Device`]. Never a panic.
    pub fn new() -> Result<Self, BackendError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| {
            unavailable(format!("no GPU adapter: {e} (install a Vulkan driver, e.g. mesa-vulkan-drivers)"))
        })?;
        let info = adapter.get_info();
        // Everything the adapter offers (large storage bindings on real GPUs), no features.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("fastquery"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| unavailable(format!("adapter {} refused a device: {e}", info.name)))?;
        let errors = Arc::new(Mutex::new(None));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        let make =
            |file: &str, entry: &str, slots: &[Slot]| build(&device, &source(file), entry, slots, true);
        let k = Kernels {
            add: make("elementwise.wgsl", "add_u32", ELEMENTWISE)?,
            sub: make("elementwise.wgsl", "sub_u32", ELEMENTWISE)?,
            difference: make("elementwise.wgsl", "difference_u32", ELEMENTWISE)?,
            mul: make("elementwise.wgsl", "mul_u32", ELEMENTWISE)?,
            monomial: make("elementwise.wgsl", "monomial_mul_u32", ELEMENTWISE)?,
            neg: make("unary.wgsl", "neg_u32", UNARY)?,
            scalar_mul: make("unary.wgsl", "scalar_mul_u32", UNARY)?,
            ntt_forward_stage: build(&device, &ntt_source(1), "ntt_forward_stage", NTT, true)?,
            ntt_inverse_stage: build(&device, &ntt_source(1), "ntt_inverse_stage", NTT, true)?,
            ntt_scale: build(&device, &ntt_source(1), "ntt_scale", NTT, true)?,
            mac: make("mac.wgsl", "mac_ntt_u32", MAC)?,
            mod_switch: make("modswitch.wgsl", "mod_switch_down_u32", MODSWITCH)?,
            gather: make("permute.wgsl", "gather_signed_u32", PERMUTE)?,
            decompose: make("permute.wgsl", "decompose_u32", PERMUTE)?,
        };
        Ok(Self { device, queue, adapter: info, limits, errors, k })
    }

    /// The adapter's name, backend and type, for example "llvmpipe (LLVM 15.0.6, 256 bits),
    /// Vulkan, software (CPU) adapter".
    pub fn describe(&self) -> String {
        let kind = match self.adapter.device_type {
            wgpu::DeviceType::Cpu => "software (CPU) adapter".to_string(),
            wgpu::DeviceType::DiscreteGpu => "discrete GPU".to_string(),
            wgpu::DeviceType::IntegratedGpu => "integrated GPU".to_string(),
            wgpu::DeviceType::VirtualGpu => "virtual GPU".to_string(),
            wgpu::DeviceType::Other => "other device".to_string(),
        };
        format!("{}, {:?}, {kind}", self.adapter.name, self.adapter.backend)
    }

    /// Whether the adapter is a software rasteriser (lavapipe, WARP, SwiftShader).
    pub fn is_software(&self) -> bool {
        self.adapter.device_type == wgpu::DeviceType::Cpu
    }

    fn check(&self) -> Result<(), BackendError> {
        let mut slot = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(e) => Err(BackendError::Device(format!("wgpu: {e}"))),
            None => Ok(()),
        }
    }

    fn storage(&self, words: &[u32]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(words),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        })
    }

    /// Workgroups and stride of a grid-stride loop over `total` items.
    fn grid(total: usize) -> (u32, u32) {
        let groups = total.div_ceil(WG as usize).clamp(1, MAX_GROUPS as usize) as u32;
        (groups, groups * WG)
    }

    fn params(ring: &WgpuRing, limbs: usize, total: usize, extra: [u32; 8]) -> Result<Params, BackendError> {
        let total = u32::try_from(total).map_err(|_| {
            BackendError::InvalidInput(format!("{total} work items exceed the kernels' 32-bit index"))
        })?;
        let mut p = [0u32; 12];
        p[..4].copy_from_slice(&[ring.n as u32, ring.log_n, limbs as u32, total]);
        p[4..].copy_from_slice(&extra);
        Ok(p)
    }

    /// Records every step in one command buffer, submits it and checks for errors.
    fn run(&self, steps: Vec<Step<'_>>) -> Result<(), BackendError> {
        let max_binding = self.limits.max_storage_buffer_binding_size;
        let mut uniforms = Vec::new();
        for step in &steps {
            for b in &step.binds {
                match b {
                    Bind::Buf(buf) if buf.size() > max_binding => {
                        return Err(BackendError::InvalidInput(format!(
                            "a buffer of {} MB exceeds the adapter's storage binding limit of {} MB",
                            buf.size() >> 20,
                            max_binding >> 20
                        )));
                    }
                    Bind::Params(p) => {
                        uniforms.push(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: None,
                            contents: bytemuck::cast_slice(p),
                            usage: wgpu::BufferUsages::UNIFORM,
                        }))
                    }
                    Bind::Buf(_) => {}
                }
            }
        }
        let mut uniform = uniforms.iter();
        let groups: Vec<wgpu::BindGroup> = steps
            .iter()
            .map(|step| {
                let entries: Vec<wgpu::BindGroupEntry<'_>> = step
                    .binds
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupEntry {
                        binding: i as u32,
                        resource: match b {
                            Bind::Buf(buf) => buf.as_entire_binding(),
                            Bind::Params(_) => {
                                uniform.next().expect("one uniform per Params binding").as_entire_binding()
                            }
                        },
                    })
                    .collect();
                self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &step.kernel.layout,
                    entries: &entries,
                })
            })
            .collect();
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            for (step, group) in steps.iter().zip(&groups) {
                pass.set_pipeline(&step.kernel.pipeline);
                pass.set_bind_group(0, group, &[]);
                let (x, y, z) = step.groups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
        self.queue.submit([enc.finish()]);
        self.check()
    }

    /// A strided kernel over `total` words of `shape` with bindings from `binds` (the uniform
    /// parameters are filled in at `param_at`).
    fn strided<'a>(
        &self,
        kernel: &'a Kernel,
        ring: &WgpuRing,
        shape: Shape,
        mut binds: Vec<Bind<'a>>,
        param_at: usize,
        extra: u32,
    ) -> Result<(), BackendError> {
        let total = shape.words(ring.n);
        let (groups, stride) = Self::grid(total);
        binds.insert(
            param_at,
            Bind::Params(Self::params(ring, shape.limbs, total, [stride, extra, 0, 0, 0, 0, 0, 0])?),
        );
        self.run(vec![Step { kernel, binds, groups: (groups, 1, 1) }])
    }

    /// A kernel of elementwise.wgsl on `a` and `b` (the Barrett constants in the aux slot;
    /// `extra` is its word b).
    fn binary(
        &self,
        kernel: &Kernel,
        ring: &WgpuRing,
        a: &WgpuBuffer,
        b: &WgpuBuffer,
        shape: Shape,
        extra: u32,
    ) -> Result<(), BackendError> {
        let (Some(x), Some(y)) = (a.buf.as_ref(), b.buf.as_ref()) else { return Ok(()) };
        let binds = vec![Bind::Buf(x), Bind::Buf(y), Bind::Buf(&ring.moduli), Bind::Buf(&ring.barrett)];
        self.strided(kernel, ring, shape, binds, 3, extra)
    }

    fn ntt(
        &self,
        ring: &WgpuRing,
        buf: &mut WgpuBuffer,
        shape: Shape,
        inverse: bool,
    ) -> Result<(), BackendError> {
        let Some(data) = buf.buf.as_ref() else { return Ok(()) };
        let rows = shape.rows();
        let tables = |inv: bool| {
            let (w, ws) = if inv { (&ring.inv, &ring.inv_shoup) } else { (&ring.fwd, &ring.fwd_shoup) };
            vec![Bind::Buf(data), Bind::Buf(w), Bind::Buf(ws), Bind::Buf(&ring.moduli), Bind::Buf(&ring.ninv)]
        };
        let mut steps = Vec::new();
        if let Some((fwd, inv)) = &ring.shared {
            let kernel = if inverse { inv } else { fwd };
            for first in (0..rows).step_by(MAX_GROUPS as usize) {
                let count = (rows - first).min(MAX_GROUPS as usize);
                let mut binds = tables(inverse);
                binds.push(Bind::Params(Self::params(
                    ring,
                    shape.limbs,
                    0,
                    [0, 0, first as u32, 0, 0, 0, 0, 0],
                )?));
                steps.push(Step { kernel, binds, groups: (count as u32, 1, 1) });
            }
            return self.run(steps);
        }
        // One dispatch per stage over every butterfly of every row.
        let butterflies = rows * (ring.n / 2);
        let (groups, stride) = Self::grid(butterflies);
        let log_n = ring.log_n;
        let stages: Vec<u32> = if inverse { (0..log_n).collect() } else { (0..log_n).rev().collect() };
        let kernel = if inverse { &self.k.ntt_inverse_stage } else { &self.k.ntt_forward_stage };
        for log_half in stages {
            let mut binds = tables(inverse);
            binds.push(Bind::Params(Self::params(
                ring,
                shape.limbs,
                butterflies,
                [stride, log_half, 0, 0, 0, 0, 0, 0],
            )?));
            steps.push(Step { kernel, binds, groups: (groups, 1, 1) });
        }
        if inverse {
            let words = shape.words(ring.n);
            let (g, s) = Self::grid(words);
            let mut binds = tables(true);
            binds.push(Bind::Params(Self::params(ring, shape.limbs, words, [s, 0, 0, 0, 0, 0, 0, 0])?));
            steps.push(Step { kernel: &self.k.ntt_scale, binds, groups: (g, 1, 1) });
        }
        self.run(steps)
    }
}

/// The NTT module with `SN`, the workgroup row length, substituted.
fn ntt_source(sn: usize) -> String {
    source("ntt.wgsl").replace("array<u32, SN>", &format!("array<u32, {sn}>"))
}

/// Compiles `entry` of `wgsl` into a pipeline with an explicit layout of `slots`, inside a
/// validation error scope so that a shader error is returned, not raised.
fn build(
    device: &wgpu::Device,
    wgsl: &str,
    entry: &str,
    slots: &[Slot],
    zero_wg: bool,
) -> Result<Kernel, BackendError> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(entry),
        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
    });
    let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match s {
                Slot::Uniform => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                Slot::Read | Slot::ReadWrite => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: matches!(s, Slot::Read) },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect();
    let layout =
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: None, entries: &entries });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: None,
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[],
            zero_initialize_workgroup_memory: zero_wg,
        },
        cache: None,
    });
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(dev(&format!("shader {entry} does not validate"), e)),
        None => Ok(Kernel { pipeline, layout }),
    }
}

/// Pairs `(x, shoup(x))` of each limb, as the shaders' `vec2<u32>`.
fn with_shoup(moduli: &[Modulus], xs: &[u32]) -> Vec<u32> {
    xs.iter().zip(moduli).flat_map(|(&x, m)| [x, m.shoup(x)]).collect()
}

impl Backend for WgpuBackend {
    type Buffer = WgpuBuffer;
    type Ring = WgpuRing;

    fn info(&self) -> BackendInfo {
        BackendInfo { name: "wgpu", device: self.describe(), accelerator: !self.is_software(), memory: None }
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| dev("poll", e))?;
        self.check()
    }

    fn load_ring(&self, ring: &RingContext) -> Result<WgpuRing, BackendError> {
        let (n, limbs) = (ring.n(), ring.limbs());
        if limbs > MAX_LIMBS {
            return Err(BackendError::InvalidInput(format!("{limbs} limbs exceed the kernels' {MAX_LIMBS}")));
        }
        if n < 4 {
            return Err(BackendError::InvalidInput(format!("N = {n} is below the kernels' minimum of 4")));
        }
        let moduli = ring.moduli();
        let cat = |f: &dyn Fn(&fastquery_ntt::NttTables) -> Vec<u32>| -> Vec<u32> {
            ring.tables().iter().flat_map(|t| f(t)).collect()
        };
        let mut ms = vec![0u32; 2 * limbs * limbs];
        for last in 0..limbs {
            for i in 0..last {
                let m = moduli[i];
                // Distinct primes: p_last is invertible mod p_i.
                let inv = m.inv(m.reduce(moduli[last].value())).unwrap_or(0);
                ms[2 * (last * limbs + i)] = inv;
                ms[2 * (last * limbs + i) + 1] = m.shoup(inv);
            }
        }
        let barrett: Vec<u32> = moduli
            .iter()
            .flat_map(|m| {
                let b = m.barrett_constant();
                [b as u32, (b >> 32) as u32]
            })
            .collect();
        let n_inv: Vec<u32> = ring.tables().iter().map(|t| t.n_inv()).collect();
        // The row in workgroup memory when it fits the adapter (32 KB on lavapipe: N <= 8192).
        let shared = if n * 4 <= self.limits.max_compute_workgroup_storage_size as usize {
            let src = ntt_source(n);
            Some((
                build(&self.device, &src, "ntt_forward_shared", NTT, false)?,
                build(&self.device, &src, "ntt_inverse_shared", NTT, false)?,
            ))
        } else {
            None
        };
        let r = WgpuRing {
            n,
            log_n: n.trailing_zeros(),
            limbs,
            moduli: self.storage(&moduli.iter().map(|m| m.value()).collect::<Vec<_>>()),
            barrett: self.storage(&barrett),
            lazy: self.storage(
                &moduli.iter().map(|m| m.lazy_products().min(u32::MAX as usize) as u32).collect::<Vec<_>>(),
            ),
            fwd: self.storage(&cat(&|t| t.forward().to_vec())),
            fwd_shoup: self.storage(&cat(&|t| t.forward_shoup().to_vec())),
            inv: self.storage(&cat(&|t| t.inverse().to_vec())),
            inv_shoup: self.storage(&cat(&|t| t.inverse_shoup().to_vec())),
            ninv: self.storage(&with_shoup(moduli, &n_inv)),
            ms: self.storage(&ms),
            host_moduli: moduli.to_vec(),
            shared,
        };
        self.check()?;
        Ok(r)
    }

    fn alloc_zeroed(&self, words: usize) -> Result<WgpuBuffer, BackendError> {
        if words == 0 {
            return Ok(WgpuBuffer { buf: None, len: 0 });
        }
        let size = words as u64 * 4;
        if size > self.limits.max_buffer_size {
            return Err(BackendError::InvalidInput(format!(
                "a buffer of {} MB exceeds the adapter's limit of {} MB",
                size >> 20,
                self.limits.max_buffer_size >> 20
            )));
        }
        // wgpu zero-initialises new buffers.
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.check()?;
        Ok(WgpuBuffer { buf: Some(buf), len: words })
    }

    fn upload(&self, words: &[u32]) -> Result<WgpuBuffer, BackendError> {
        let mut b = self.alloc_zeroed(words.len())?;
        if let Some(buf) = &b.buf {
            self.queue.write_buffer(buf, 0, bytemuck::cast_slice(words));
        }
        b.len = words.len();
        self.check()?;
        Ok(b)
    }

    fn download(&self, buf: &WgpuBuffer, out: &mut [u32]) -> Result<(), BackendError> {
        if buf.len != out.len() {
            return Err(BackendError::Shape(format!("download of {} words into {}", buf.len, out.len())));
        }
        let Some(src) = &buf.buf else { return Ok(()) };
        let size = src.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| dev("poll", e))?;
        rx.recv().map_err(|e| dev("mapping", e))?.map_err(|e| dev("mapping", e))?;
        {
            let view = staging.slice(..).get_mapped_range().map_err(|e| dev("mapped range", e))?;
            out.copy_from_slice(bytemuck::cast_slice(&view));
        }
        staging.unmap();
        self.check()
    }

    fn duplicate(&self, buf: &WgpuBuffer) -> Result<WgpuBuffer, BackendError> {
        let mut out = self.alloc_zeroed(buf.len)?;
        self.copy_words(buf, 0, &mut out, 0, buf.len)?;
        Ok(out)
    }

    fn copy_words(
        &self,
        src: &WgpuBuffer,
        src_at: usize,
        dst: &mut WgpuBuffer,
        dst_at: usize,
        words: usize,
    ) -> Result<(), BackendError> {
        let (Some(s), Some(d)) = (src.buf.as_ref(), dst.buf.as_ref()) else { return Ok(()) };
        if words == 0 {
            return Ok(());
        }
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(s, src_at as u64 * 4, d, dst_at as u64 * 4, words as u64 * 4);
        self.queue.submit([enc.finish()]);
        self.check()
    }

    fn ntt_forward(&self, ring: &WgpuRing, buf: &mut WgpuBuffer, shape: Shape) -> Result<(), BackendError> {
        self.ntt(ring, buf, shape, false)
    }

    fn ntt_inverse(&self, ring: &WgpuRing, buf: &mut WgpuBuffer, shape: Shape) -> Result<(), BackendError> {
        self.ntt(ring, buf, shape, true)
    }

    fn add_assign(
        &self,
        ring: &WgpuRing,
        a: &mut WgpuBuffer,
        b: &WgpuBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.binary(&self.k.add, ring, a, b, shape, 0)
    }

    fn sub_assign(
        &self,
        ring: &WgpuRing,
        a: &mut WgpuBuffer,
        b: &WgpuBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.binary(&self.k.sub, ring, a, b, shape, 0)
    }

    /// One dispatch reads both ranges where they lie (the default copied both out first).
    fn difference(
        &self,
        ring: &WgpuRing,
        src: &WgpuBuffer,
        (minuend, subtrahend): (usize, usize),
        shape: Shape,
        n: usize,
    ) -> Result<WgpuBuffer, BackendError> {
        let words = fastquery_backend::difference_words(src.len, (minuend, subtrahend), shape, (n, ring.n))?;
        let offset = |at: usize| {
            u32::try_from(at).map_err(|_| {
                BackendError::InvalidInput(format!("offset {at} exceeds the kernels' 32-bit index"))
            })
        };
        let (b, c) = (offset(minuend)?, offset(subtrahend)?);
        let out = self.alloc_zeroed(words)?;
        let (Some(x), Some(y)) = (out.buf.as_ref(), src.buf.as_ref()) else { return Ok(out) };
        let (groups, stride) = Self::grid(words);
        let binds = vec![
            Bind::Buf(x),
            Bind::Buf(y),
            Bind::Buf(&ring.moduli),
            Bind::Params(Self::params(ring, shape.limbs, words, [stride, b, c, 0, 0, 0, 0, 0])?),
            Bind::Buf(&ring.barrett),
        ];
        self.run(vec![Step { kernel: &self.k.difference, binds, groups: (groups, 1, 1) }])?;
        Ok(out)
    }

    fn neg_assign(&self, ring: &WgpuRing, a: &mut WgpuBuffer, shape: Shape) -> Result<(), BackendError> {
        let Some(x) = a.buf.as_ref() else { return Ok(()) };
        // The scalar slot is unused by neg; the ring's N^-1 pairs fill it.
        let binds = vec![Bind::Buf(x), Bind::Buf(&ring.moduli), Bind::Buf(&ring.ninv)];
        self.strided(&self.k.neg, ring, shape, binds, 2, 0)
    }

    fn scalar_mul_assign(
        &self,
        ring: &WgpuRing,
        a: &mut WgpuBuffer,
        scalars: &[u32],
        shape: Shape,
    ) -> Result<(), BackendError> {
        let Some(x) = a.buf.as_ref() else { return Ok(()) };
        let s = self.storage(&with_shoup(&ring.host_moduli, scalars));
        let binds = vec![Bind::Buf(x), Bind::Buf(&ring.moduli), Bind::Buf(&s)];
        self.strided(&self.k.scalar_mul, ring, shape, binds, 2, 0)
    }

    fn mul_assign(
        &self,
        ring: &WgpuRing,
        a: &mut WgpuBuffer,
        b: &WgpuBuffer,
        shape: Shape,
    ) -> Result<(), BackendError> {
        self.binary(&self.k.mul, ring, a, b, shape, 0)
    }

    fn monomial_mul_assign(
        &self,
        ring: &WgpuRing,
        a: &mut WgpuBuffer,
        k: usize,
        shape: Shape,
    ) -> Result<(), BackendError> {
        let copy = self.duplicate(a)?;
        self.binary(&self.k.monomial, ring, a, &copy, shape, k as u32)
    }

    fn mod_switch_down(
        &self,
        ring: &WgpuRing,
        a: &WgpuBuffer,
        polys: usize,
        in_limbs: usize,
        out: &mut WgpuBuffer,
        out_limbs: usize,
    ) -> Result<(), BackendError> {
        let (Some(x), Some(y)) = (a.buf.as_ref(), out.buf.as_ref()) else { return Ok(()) };
        let total = polys * ring.n;
        let (groups, stride) = Self::grid(total);
        let params = Self::params(
            ring,
            ring.limbs,
            total,
            [stride, in_limbs as u32, out_limbs as u32, 0, 0, 0, 0, 0],
        )?;
        let binds = vec![
            Bind::Buf(y),
            Bind::Buf(x),
            Bind::Buf(&ring.moduli),
            Bind::Buf(&ring.ms),
            Bind::Params(params),
        ];
        self.run(vec![Step { kernel: &self.k.mod_switch, binds, groups: (groups, 1, 1) }])
    }

    fn gather_signed(
        &self,
        ring: &WgpuRing,
        _ctx: &RingContext,
        out: &mut WgpuBuffer,
        a: &WgpuBuffer,
        idx: &[u32],
        shape: Shape,
    ) -> Result<(), BackendError> {
        let (Some(y), Some(x)) = (out.buf.as_ref(), a.buf.as_ref()) else { return Ok(()) };
        let table = self.storage(idx);
        let binds = vec![Bind::Buf(y), Bind::Buf(x), Bind::Buf(&ring.moduli), Bind::Buf(&table)];
        self.strided(&self.k.gather, ring, shape, binds, 4, 0)
    }

    fn decompose(
        &self,
        ring: &WgpuRing,
        _ctx: &RingContext,
        a: &WgpuBuffer,
        polys: usize,
        limbs: usize,
        digit_bits: u32,
        digits: usize,
        out: &mut WgpuBuffer,
    ) -> Result<(), BackendError> {
        let (Some(x), Some(y)) = (a.buf.as_ref(), out.buf.as_ref()) else { return Ok(()) };
        let total = polys * limbs * digits * limbs * ring.n;
        let (groups, stride) = Self::grid(total);
        let mask = (1u32 << digit_bits) - 1;
        let params = Self::params(ring, limbs, total, [stride, digit_bits, digits as u32, mask, 0, 0, 0, 0])?;
        // The gather-table slot is unused: the moduli fill it.
        let binds = vec![
            Bind::Buf(y),
            Bind::Buf(x),
            Bind::Buf(&ring.moduli),
            Bind::Buf(&ring.moduli),
            Bind::Params(params),
        ];
        self.run(vec![Step { kernel: &self.k.decompose, binds, groups: (groups, 1, 1) }])
    }

    fn mac(
        &self,
        ring: &WgpuRing,
        out: &mut WgpuBuffer,
        a: &WgpuBuffer,
        b: &WgpuBuffer,
        dims: MacDims,
        limbs: usize,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let Some(o) = out.buf.as_ref() else { return Ok(()) };
        let (Some(x), Some(y)) = (a.buf.as_ref(), b.buf.as_ref()) else {
            // inner == 0: the sum is empty; keep or clear `out`.
            if !accumulate {
                *out = self.alloc_zeroed(out.len)?;
            }
            return Ok(());
        };
        let lc = limbs * ring.n;
        let tiles = dims.rows.div_ceil(MAC_ROWS);
        if tiles > MAX_GROUPS as usize || lc.div_ceil(MAC_WG as usize) > MAX_GROUPS as usize {
            return Err(BackendError::InvalidInput(format!(
                "multiply-accumulate of {} rows x {lc} words exceeds one dispatch",
                dims.rows
            )));
        }
        let mut steps = Vec::new();
        for c0 in (0..dims.cols).step_by(MAX_GROUPS as usize) {
            let count = (dims.cols - c0).min(MAX_GROUPS as usize);
            let params = Self::params(
                ring,
                limbs,
                lc,
                [
                    dims.rows as u32,
                    dims.inner as u32,
                    dims.cols as u32,
                    u32::from(accumulate),
                    c0 as u32,
                    0,
                    0,
                    0,
                ],
            )?;
            let binds = vec![
                Bind::Buf(o),
                Bind::Buf(x),
                Bind::Buf(y),
                Bind::Buf(&ring.moduli),
                Bind::Buf(&ring.barrett),
                Bind::Buf(&ring.lazy),
                Bind::Params(params),
            ];
            steps.push(Step {
                kernel: &self.k.mac,
                binds,
                groups: (lc.div_ceil(MAC_WG as usize) as u32, count as u32, tiles as u32),
            });
        }
        self.run(steps)
    }
}
