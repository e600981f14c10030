//! What the backend needs of a CUDA device: memory, copies and kernel launches by name. Two
//! implementations: the driver (cudarc, a real GPU) and, with the `emulator` feature, the
//! kernels compiled for the host and run on the CPU (`emu/emulator.cpp`), so that the backend's
//! own code and every kernel are tested where there is no GPU. The backend is written once
//! against [`Device`]; nothing above this file knows which one runs.
#![allow(unsafe_code)]

use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, DriverError, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use fastquery_backend::{BackendError, work};

/// A word type kernels read and write (`u32`, `u64`).
pub(crate) trait Word: DeviceRepr + ValidAsZeroBits + bytemuck::Pod {}
impl Word for u32 {}
impl Word for u64 {}

pub(crate) fn dev(e: DriverError) -> BackendError {
    BackendError::Device(format!("CUDA: {e:?}"))
}

/// Device memory of `T` words: on the GPU, or (emulator) host memory with a guard zone behind
/// the words that every launch checks.
#[derive(Debug)]
pub enum Mem<T: DeviceRepr> {
    Gpu(CudaSlice<T>),
    #[cfg(feature = "emulator")]
    Host(crate::emulator::HostMem<T>),
}

/// One kernel argument, in the kernel's parameter order.
pub(crate) enum Arg<'a> {
    /// A `u32*` the kernel writes.
    Out(&'a mut Mem<u32>),
    /// A `const u32*`.
    In(&'a Mem<u32>),
    /// A `const u64*`.
    In64(&'a Mem<u64>),
    U32(u32),
    U64(u64),
}

/// A device: the GPU through the driver, or the emulator.
pub(crate) enum Device {
    Gpu {
        /// Held for the device's lifetime (the module and stream live in it).
        _ctx: Arc<CudaContext>,
        stream: Arc<CudaStream>,
        _module: Arc<CudaModule>,
        funcs: Vec<(&'static str, CudaFunction)>,
    },
    /// The emulator; with `races`, every launch runs twice, threads and blocks in opposite
    /// orders, and must give the same words.
    #[cfg(feature = "emulator")]
    Emulated { races: bool },
}

/// What the emulator fills scratch memory with ([`Device::alloc_scratch`]): not a residue of
/// any 31-bit prime, so a word left unwritten shows in every product it reaches.
#[cfg(feature = "emulator")]
pub(crate) const SCRATCH_POISON: u32 = 0xfeed_face;

fn mixed() -> BackendError {
    BackendError::Device("CUDA: a buffer of another device".into())
}

impl Device {
    pub(crate) fn alloc_zeros<T: Word>(&self, len: usize) -> Result<Mem<T>, BackendError> {
        work::allocation();
        match self {
            Self::Gpu { stream, .. } => Ok(Mem::Gpu(stream.alloc_zeros::<T>(len).map_err(dev)?)),
            #[cfg(feature = "emulator")]
            Self::Emulated { .. } => Ok(Mem::Host(crate::emulator::HostMem::zeroed(len))),
        }
    }

    /// Scratch words the next launch overwrites in full before anything reads them: left
    /// unset on the GPU (no memset behind the allocation), filled with [`SCRATCH_POISON`] on
    /// the emulator, so that a kernel leaving a word unwritten gives wrong results in the
    /// checks instead of the zeros a fresh allocation would hide it behind.
    pub(crate) fn alloc_scratch(&self, len: usize) -> Result<Mem<u32>, BackendError> {
        work::allocation();
        match self {
            // SAFETY: the words are unset device memory; the caller's kernel writes every one
            // before any launch or copy reads it, and a device word of any value is a valid u32.
            Self::Gpu { stream, .. } => Ok(Mem::Gpu(unsafe { stream.alloc::<u32>(len) }.map_err(dev)?)),
            #[cfg(feature = "emulator")]
            Self::Emulated { .. } => {
                Ok(Mem::Host(crate::emulator::HostMem::from_slice(&vec![SCRATCH_POISON; len])))
            }
        }
    }

    pub(crate) fn htod<T: Word>(&self, v: &[T]) -> Result<Mem<T>, BackendError> {
        work::allocation();
        work::bus(std::mem::size_of_val(v));
        match self {
            Self::Gpu { stream, .. } => Ok(Mem::Gpu(stream.clone_htod(v).map_err(dev)?)),
            #[cfg(feature = "emulator")]
            Self::Emulated { .. } => Ok(Mem::Host(crate::emulator::HostMem::from_slice(v))),
        }
    }

    /// Copies `m` into `out` (same length) and waits for it.
    pub(crate) fn dtoh<T: Word>(&self, m: &Mem<T>, out: &mut [T]) -> Result<(), BackendError> {
        work::wait();
        work::bus(std::mem::size_of_val(out));
        match (self, m) {
            (Self::Gpu { stream, .. }, Mem::Gpu(d)) => {
                stream.memcpy_dtoh(d, out).map_err(dev)?;
                stream.synchronize().map_err(dev)
            }
            #[cfg(feature = "emulator")]
            (Self::Emulated { .. }, Mem::Host(h)) => {
                out.clone_from_slice(h.words());
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(mixed()),
        }
    }

    pub(crate) fn dtod<T: Word>(&self, m: &Mem<T>) -> Result<Mem<T>, BackendError> {
        work::allocation();
        match (self, m) {
            (Self::Gpu { stream, .. }, Mem::Gpu(d)) => Ok(Mem::Gpu(stream.clone_dtod(d).map_err(dev)?)),
            #[cfg(feature = "emulator")]
            (Self::Emulated { .. }, Mem::Host(h)) => {
                Ok(Mem::Host(crate::emulator::HostMem::from_slice(h.words())))
            }
            #[allow(unreachable_patterns)]
            _ => Err(mixed()),
        }
    }

    /// `dst[dst_at..][..words] = src[src_at..][..words]` (ranges checked by the caller).
    pub(crate) fn copy(
        &self,
        src: &Mem<u32>,
        src_at: usize,
        dst: &mut Mem<u32>,
        dst_at: usize,
        words: usize,
    ) -> Result<(), BackendError> {
        match (self, src, dst) {
            (Self::Gpu { stream, .. }, Mem::Gpu(s), Mem::Gpu(d)) => {
                let from = s.slice(src_at..src_at + words);
                let mut to = d.slice_mut(dst_at..dst_at + words);
                stream.memcpy_dtod(&from, &mut to).map_err(dev)
            }
            #[cfg(feature = "emulator")]
            (Self::Emulated { .. }, Mem::Host(s), Mem::Host(d)) => {
                d.words_mut()[dst_at..dst_at + words].copy_from_slice(&s.words()[src_at..src_at + words]);
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(mixed()),
        }
    }

    pub(crate) fn zero(&self, m: &mut Mem<u32>) -> Result<(), BackendError> {
        match (self, m) {
            (Self::Gpu { stream, .. }, Mem::Gpu(d)) => stream.memset_zeros(d).map_err(dev),
            #[cfg(feature = "emulator")]
            (Self::Emulated { .. }, Mem::Host(h)) => {
                h.words_mut().fill(0);
                Ok(())
            }
            #[allow(unreachable_patterns)]
            _ => Err(mixed()),
        }
    }

    pub(crate) fn synchronize(&self) -> Result<(), BackendError> {
        work::wait();
        match self {
            Self::Gpu { stream, .. } => stream.synchronize().map_err(dev),
            #[cfg(feature = "emulator")]
            Self::Emulated { .. } => Ok(()),
        }
    }

    /// Launches kernel `name` with `args`.
    ///
    /// # Safety
    /// `args` must match the kernel's parameters in kernels/*.cu (the emulator checks count,
    /// kinds and widths; the driver cannot), and the launch must keep every access inside the
    /// buffers.
    pub(crate) unsafe fn launch(
        &self,
        name: &str,
        cfg: LaunchConfig,
        args: &mut [Arg<'_>],
    ) -> Result<(), BackendError> {
        work::launch();
        match self {
            Self::Gpu { stream, funcs, .. } => {
                let f = funcs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| f)
                    .ok_or_else(|| BackendError::Device(format!("CUDA: kernel {name} not loaded")))?;
                let mut l = stream.launch_builder(f);
                for a in args.iter_mut() {
                    match a {
                        Arg::Out(Mem::Gpu(s)) => l.arg(s),
                        Arg::In(Mem::Gpu(s)) => l.arg(s),
                        Arg::In64(Mem::Gpu(s)) => l.arg(s),
                        Arg::U32(v) => l.arg(&*v),
                        Arg::U64(v) => l.arg(&*v),
                        #[allow(unreachable_patterns)]
                        _ => return Err(mixed()),
                    };
                }
                // SAFETY: the caller's contract (argument list and bounds).
                unsafe { l.launch(cfg) }.map(|_| ()).map_err(dev)
            }
            #[cfg(feature = "emulator")]
            Self::Emulated { races } => crate::emulator::launch(name, cfg, args, *races),
        }
    }
}

/// Kernel launches timed one by one (`FASTQUERY_CUDA_PROFILE=1`): on the GPU by a pair of events
/// around each launch, on the emulator by the host's clock. A diagnostic: the events cost a few
/// microseconds a launch. At most [`Profile::PENDING`] launches keep their events (a serving
/// process that never asks for its times must not gather events without end): beyond that the
/// oldest are summed where they stand, which waits for them.
#[derive(Default)]
pub(crate) struct Profile {
    state: std::sync::Mutex<ProfileState>,
}

#[derive(Default)]
struct ProfileState {
    /// Launches not yet summed.
    pending: Vec<Record>,
    /// Launches summed since the last [`Profile::drain`].
    summed: Vec<work::KernelTime>,
    /// Milliseconds of every launch summed so far (never drained).
    total_ms: f64,
}

enum Record {
    Gpu(String, cudarc::driver::CudaEvent, cudarc::driver::CudaEvent),
    #[cfg_attr(not(feature = "emulator"), allow(dead_code))]
    Host(String, f64),
}

impl ProfileState {
    /// Every pending launch summed into `summed` (its events waited for).
    fn sum_pending(&mut self) -> Result<(), BackendError> {
        for r in std::mem::take(&mut self.pending) {
            let (name, ms) = match r {
                Record::Gpu(name, start, end) => (name, f64::from(start.elapsed_ms(&end).map_err(dev)?)),
                Record::Host(name, ms) => (name, ms),
            };
            self.total_ms += ms;
            match self.summed.iter_mut().find(|k| k.kernel == name) {
                Some(k) => (k.launches, k.ms) = (k.launches + 1, k.ms + ms),
                None => self.summed.push(work::KernelTime { kernel: name, launches: 1, ms }),
            }
        }
        Ok(())
    }
}

impl Profile {
    /// Launches whose events are kept before the oldest are summed.
    pub(crate) const PENDING: usize = 1 << 16;

    fn state(&self) -> std::sync::MutexGuard<'_, ProfileState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `launch` (one kernel launch on `device`) and records its time.
    pub(crate) fn time(
        &self,
        device: &Device,
        name: &str,
        launch: impl FnOnce() -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let record = match device {
            Device::Gpu { stream, .. } => {
                let timed = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
                let start = stream.record_event(timed).map_err(dev)?;
                launch()?;
                let end = stream.record_event(timed).map_err(dev)?;
                Record::Gpu(name.to_owned(), start, end)
            }
            #[cfg(feature = "emulator")]
            Device::Emulated { .. } => {
                let t = std::time::Instant::now();
                launch()?;
                Record::Host(name.to_owned(), t.elapsed().as_secs_f64() * 1e3)
            }
        };
        let mut state = self.state();
        state.pending.push(record);
        if state.pending.len() >= Self::PENDING {
            state.sum_pending()?;
        }
        Ok(())
    }

    /// The launches since the last call, summed per kernel, most time first; waits for `device`
    /// so that every one of them has finished.
    pub(crate) fn drain(&self, device: &Device) -> Result<Vec<work::KernelTime>, BackendError> {
        device.synchronize()?;
        let mut state = self.state();
        state.sum_pending()?;
        let mut out = std::mem::take(&mut state.summed);
        out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(out)
    }

    /// Milliseconds of every launch so far; waits for `device`.
    pub(crate) fn total_ms(&self, device: &Device) -> Result<f64, BackendError> {
        device.synchronize()?;
        let mut state = self.state();
        state.sum_pending()?;
        Ok(state.total_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Summing keeps one entry per kernel (launches and time added), and a second sum adds to
    /// the first: what a drain after the cap's early sums reports.
    #[test]
    fn pending_launches_sum_per_kernel() {
        let mut s = ProfileState::default();
        let host = |name: &str, ms| Record::Host(name.to_owned(), ms);
        s.pending = vec![host("a", 1.0), host("b", 0.5), host("a", 2.0)];
        s.sum_pending().unwrap();
        assert!(s.pending.is_empty());
        s.pending = vec![host("b", 4.0), host("c", 0.25)];
        s.sum_pending().unwrap();
        let got: Vec<(String, u64, f64)> =
            s.summed.iter().map(|k| (k.kernel.clone(), k.launches, k.ms)).collect();
        assert_eq!(got, vec![("a".into(), 2, 3.0), ("b".into(), 2, 4.5), ("c".into(), 1, 0.25)]);
        // The running total counts every launch, whatever was drained.
        assert_eq!(s.total_ms, 7.75);
        s.summed.clear();
        s.pending = vec![host("a", 0.25)];
        s.sum_pending().unwrap();
        assert_eq!(s.total_ms, 8.0);
    }
}
