//! The emulated device (feature `emulator`): kernels/*.cu compiled for the host by `build.rs`
//! with `emu/cuda_shim.h`, launched through one C function, on buffers in host memory.
//!
//! It checks what a GPU would only get wrong silently or not at all on a development machine:
//! each launch's argument list against the kernel's C++ signature, block, grid and shared
//! memory limits, writes past the end of an output buffer (a guard zone behind every buffer),
//! and reads of shared memory nobody wrote (poisoned before each block). What it cannot show
//! is speed, races between threads of different blocks, or resource limits of the real chip.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char};

use bytemuck::Pod;
use cudarc::driver::LaunchConfig;
use fastquery_backend::BackendError;

use crate::device::{Arg, Mem};

/// Words of guard behind every emulated buffer.
const GUARD_BYTES: usize = 256;
const CANARY: u8 = 0xA5;

/// Host memory standing in for a device buffer: the words, then a guard zone.
#[derive(Debug)]
pub struct HostMem<T> {
    data: Vec<T>,
    len: usize,
}

impl<T: Pod> HostMem<T> {
    fn guard_len() -> usize {
        GUARD_BYTES.div_ceil(size_of::<T>().max(1))
    }

    pub(crate) fn zeroed(len: usize) -> Self {
        let mut data = vec![T::zeroed(); len + Self::guard_len()];
        bytemuck::cast_slice_mut::<T, u8>(&mut data[len..]).fill(CANARY);
        Self { data, len }
    }

    pub(crate) fn from_slice(v: &[T]) -> Self {
        let mut m = Self::zeroed(v.len());
        m.data[..v.len()].copy_from_slice(v);
        m
    }

    pub(crate) fn words(&self) -> &[T] {
        &self.data[..self.len]
    }

    pub(crate) fn words_mut(&mut self) -> &mut [T] {
        &mut self.data[..self.len]
    }

    fn guard_intact(&self) -> bool {
        bytemuck::cast_slice::<T, u8>(&self.data[self.len..]).iter().all(|&b| b == CANARY)
    }
}

/// One argument as the C side reads it (`struct Arg` in emu/emulator.cpp).
#[repr(C)]
struct CArg {
    value: u64,
    kind: u32,
    size: u32,
}

const PTR_MUT: u32 = 1;
const PTR_CONST: u32 = 2;
const SCALAR: u32 = 3;

unsafe extern "C" {
    fn fq_emu_launch(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        smem: u32,
        args: *const CArg,
        nargs: u32,
        reverse: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
}

fn host_only() -> BackendError {
    BackendError::Device("CUDA emulator: a GPU buffer passed to the emulator".into())
}

/// Runs one launch on the emulator; with `races`, twice in opposite orders (see
/// `CudaBackend::emulated_checking_races`), from the same inputs, and the outputs must agree.
pub(crate) fn launch(
    name: &str,
    cfg: LaunchConfig,
    args: &mut [Arg<'_>],
    races: bool,
) -> Result<(), BackendError> {
    if !races {
        return run_once(name, cfg, args, false);
    }
    let outputs = |args: &[Arg<'_>]| -> Vec<Vec<u32>> {
        args.iter()
            .filter_map(|a| match a {
                Arg::Out(Mem::Host(h)) => Some(h.words().to_vec()),
                _ => None,
            })
            .collect()
    };
    let before = outputs(args);
    run_once(name, cfg, args, false)?;
    let forward = outputs(args);
    let mut saved = before.iter();
    for a in args.iter_mut() {
        if let (Arg::Out(Mem::Host(h)), Some(b)) = (a, saved.next()) {
            h.words_mut().copy_from_slice(b);
        }
    }
    run_once(name, cfg, args, true)?;
    for (i, (f, r)) in forward.iter().zip(outputs(args)).enumerate() {
        if let Some(w) = f.iter().zip(&r).position(|(x, y)| x != y) {
            return Err(BackendError::Device(format!(
                "CUDA emulator: kernel {name} is order-dependent (a race): output {i} differs at word {w} \
                 between threads run forwards and backwards"
            )));
        }
    }
    Ok(())
}

/// One run of a launch on the emulator (`reverse`: blocks and threads in reverse order), then
/// the check of every output buffer's guard zone.
fn run_once(name: &str, cfg: LaunchConfig, args: &mut [Arg<'_>], reverse: bool) -> Result<(), BackendError> {
    let mut c = Vec::with_capacity(args.len());
    for a in args.iter_mut() {
        c.push(match a {
            Arg::Out(Mem::Host(h)) => CArg { value: h.data.as_mut_ptr() as u64, kind: PTR_MUT, size: 4 },
            Arg::In(Mem::Host(h)) => CArg { value: h.data.as_ptr() as u64, kind: PTR_CONST, size: 4 },
            Arg::In64(Mem::Host(h)) => CArg { value: h.data.as_ptr() as u64, kind: PTR_CONST, size: 8 },
            Arg::U32(v) => CArg { value: u64::from(*v), kind: SCALAR, size: 4 },
            Arg::U64(v) => CArg { value: *v, kind: SCALAR, size: 8 },
            _ => return Err(host_only()),
        });
    }
    // The register check (crate::resource_usage in the tests) assumes the block sizes of
    // KERNELS: a launch above its kernel's entry would escape it.
    let threads = cfg.block_dim.0 * cfg.block_dim.1 * cfg.block_dim.2;
    if let Some((_, most)) = crate::KERNELS.iter().find(|(k, _)| *k == name)
        && threads > *most
    {
        return Err(BackendError::Device(format!(
            "CUDA emulator: kernel {name} launched with {threads} threads, above the {most} of KERNELS"
        )));
    }
    let cname = CString::new(name).map_err(|_| BackendError::Device(format!("kernel name {name:?}")))?;
    let grid = [cfg.grid_dim.0, cfg.grid_dim.1, cfg.grid_dim.2];
    let block = [cfg.block_dim.0, cfg.block_dim.1, cfg.block_dim.2];
    let mut err = vec![0u8; 512];
    // SAFETY: every pointer in `c` points into a live host buffer borrowed by `args` for this
    // call (mutable ones from `&mut`), grid/block/err are live arrays of the stated sizes, and
    // the C side checks the argument list against the kernel's signature before running it. An
    // out-of-bounds kernel write lands in the guard zone (checked below) as long as it stays
    // within GUARD_BYTES of the end.
    let rc = unsafe {
        fq_emu_launch(
            cname.as_ptr(),
            grid.as_ptr(),
            block.as_ptr(),
            cfg.shared_mem_bytes,
            c.as_ptr(),
            c.len() as u32,
            i32::from(reverse),
            err.as_mut_ptr().cast(),
            err.len(),
        )
    };
    if rc != 0 {
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        return Err(BackendError::Device(format!("CUDA emulator: {}", String::from_utf8_lossy(&err[..end]))));
    }
    for (i, a) in args.iter().enumerate() {
        if let Arg::Out(Mem::Host(h)) = a
            && !h.guard_intact()
        {
            return Err(BackendError::Device(format!(
                "CUDA emulator: kernel {name} wrote past the end of argument {i} ({} words)",
                h.len
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(blocks: u32, threads: u32, smem: u32) -> LaunchConfig {
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: smem }
    }

    fn host(v: &[u32]) -> Mem<u32> {
        Mem::Host(HostMem::from_slice(v))
    }

    fn words(m: &Mem<u32>) -> Vec<u32> {
        match m {
            Mem::Host(h) => h.words().to_vec(),
            Mem::Gpu(_) => unreachable!(),
        }
    }

    const P: u32 = 2_013_265_921;

    /// add_u32 on 1000 words of a one-limb ring of N = 8: a[i] = a[i] + b[i] mod P.
    fn add(
        a: &mut Mem<u32>,
        b: &Mem<u32>,
        p: &Mem<u32>,
        total: u64,
        c: LaunchConfig,
    ) -> Result<(), BackendError> {
        let mut args = [Arg::Out(a), Arg::In(b), Arg::In(p), Arg::U32(3), Arg::U32(1), Arg::U64(total)];
        launch("add_u32", c, &mut args, false)
    }

    #[test]
    fn a_valid_launch_computes_every_word() {
        let av: Vec<u32> = (0..1000u32).map(|i| P - 1 - i).collect();
        let bv: Vec<u32> = (0..1000u32).map(|i| 3 * i + 7).collect();
        let (mut a, b, p) = (host(&av), host(&bv), host(&[P]));
        // Fewer threads than words: the grid-stride loop covers the rest.
        add(&mut a, &b, &p, 1000, cfg(2, 96, 0)).unwrap();
        let want: Vec<u32> = av
            .iter()
            .zip(&bv)
            .map(|(&x, &y)| ((u64::from(x) + u64::from(y)) % u64::from(P)) as u32)
            .collect();
        assert_eq!(words(&a), want);
    }

    #[test]
    fn launches_the_driver_would_refuse_are_errors() {
        let (mut a, b, p) = (host(&[1; 64]), host(&[2; 64]), host(&[P]));
        for (c, what) in [
            (cfg(1, 257, 0), "above the 256 of KERNELS"),
            (cfg(0, 32, 0), "grid"),
            (cfg(1, 32, 232_449), "shared memory"),
        ] {
            let e = add(&mut a, &b, &p, 64, c).unwrap_err().to_string();
            assert!(e.contains(what), "{what}: {e}");
        }
        // Wrong count, a scalar of the wrong width, a const buffer where the kernel writes.
        let e = launch("add_u32", cfg(1, 32, 0), &mut [Arg::Out(&mut a), Arg::In(&b)], false).unwrap_err();
        assert!(e.to_string().contains("takes 6 arguments"), "{e}");
        let mut args = [Arg::Out(&mut a), Arg::In(&b), Arg::In(&p), Arg::U32(3), Arg::U32(1), Arg::U32(64)];
        assert!(
            launch("add_u32", cfg(1, 32, 0), &mut args, false)
                .unwrap_err()
                .to_string()
                .contains("argument 5")
        );
        let c = host(&[0; 64]);
        let mut args = [Arg::In(&c), Arg::In(&b), Arg::In(&p), Arg::U32(3), Arg::U32(1), Arg::U64(64)];
        assert!(
            launch("add_u32", cfg(1, 32, 0), &mut args, false)
                .unwrap_err()
                .to_string()
                .contains("argument 0")
        );
        let e = launch("no_such_kernel", cfg(1, 32, 0), &mut [], false).unwrap_err();
        assert!(e.to_string().contains("no such kernel"), "{e}");
    }

    #[test]
    fn the_emulator_knows_every_kernel_the_backend_loads() {
        for (k, _) in crate::KERNELS {
            let e = launch(k, cfg(1, 32, 0), &mut [], false).unwrap_err().to_string();
            assert!(e.contains("arguments"), "{k}: {e}");
        }
    }

    #[test]
    fn a_write_past_the_end_of_a_buffer_is_caught() {
        let (mut a, b, p) = (host(&[1; 60]), host(&[2; 64]), host(&[P]));
        // The kernel is told 64 words; `a` holds 60.
        let e = add(&mut a, &b, &p, 64, cfg(1, 64, 0)).unwrap_err();
        assert!(e.to_string().contains("wrote past the end of argument 0"), "{e}");
        // Exactly in bounds: fine.
        let mut a = host(&[1; 64]);
        add(&mut a, &b, &p, 64, cfg(1, 64, 0)).unwrap();
        assert_eq!(words(&a), vec![3; 64]);
    }

    #[test]
    fn the_race_check_finds_an_order_dependent_kernel_and_passes_a_clean_one() {
        let mut a = host(&[7; 4]);
        let mut args = [Arg::Out(&mut a)];
        launch("emu_selftest_race_u32", cfg(2, 32, 0), &mut args, false).unwrap();
        let e = launch("emu_selftest_race_u32", cfg(2, 32, 0), &mut args, true).unwrap_err();
        assert!(e.to_string().contains("order-dependent"), "{e}");
        // add_u32 writes each word from one thread: the same words both ways.
        let (mut a, b, p) = (host(&[5; 100]), host(&[6; 100]), host(&[P]));
        let mut args = [Arg::Out(&mut a), Arg::In(&b), Arg::In(&p), Arg::U32(3), Arg::U32(1), Arg::U64(100)];
        launch("add_u32", cfg(3, 32, 0), &mut args, true).unwrap();
        assert_eq!(words(&a), vec![11; 100]);
    }

    #[test]
    fn barriers_hold_every_thread_of_a_block() {
        // The plain NTT with fewer threads than butterflies: every stage depends on the last
        // one's words written by other threads, so running threads without the barrier
        // schedule would give other words. Checked against the host reference.
        let n = 64usize;
        let t = fastquery_ntt::NttTables::new(P, n).unwrap();
        let mut rng = 0x1234_5678u64;
        let v: Vec<u32> = (0..2 * n)
            .map(|_| {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                ((rng >> 33) % u64::from(P)) as u32
            })
            .collect();
        let mut want = v.clone();
        for row in want.chunks_mut(n) {
            fastquery_ntt::reference::forward(&t, row);
        }
        let (fw, fws, m) = (host(t.forward()), host(t.forward_shoup()), host(&[P]));
        let mut d = host(&v);
        let mut args = [
            Arg::Out(&mut d),
            Arg::In(&fw),
            Arg::In(&fws),
            Arg::In(&m),
            Arg::U32(n as u32),
            Arg::U32(6),
            Arg::U32(1),
        ];
        launch("ntt_forward_u32", cfg(2, 8, (n * 4) as u32), &mut args, false).unwrap();
        assert_eq!(words(&d), want);
    }
}
