//! The microbenchmark summary printed by the main job. Quick, in-process, medians of many
//! repetitions; every ratio is taken in this one run. The criterion benches in `benches/` are
//! the reference measurements (docs/BENCHMARKS.md).

use std::{sync::Arc, time::Instant};

use fastquery_backend::{Backend, Coeff, MacDims, Ntt, Polys, Ring, RingContext, Shape, conformance};
use fastquery_cpu::{CpuBackend, MacKernel};
use fastquery_math::primes::ntt_primes;
use rand::{SeedableRng, rngs::StdRng};

use crate::backend::AnyBackend;

/// Median wall time in microseconds of `f` over `reps` runs, each after an untimed `setup`.
fn median_us<S>(reps: usize, mut setup: impl FnMut() -> S, mut f: impl FnMut(S)) -> f64 {
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let s = setup();
            let t = Instant::now();
            f(s);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ring_on<B: Backend>(b: &Arc<B>, n: usize, limbs: usize) -> anyhow::Result<Ring<B>> {
    let ctx = RingContext::new(n, &ntt_primes(30, n, limbs)?)?;
    Ok(Ring::new(b.clone(), Arc::new(ctx))?)
}

fn words(ring: &RingContext, shape: Shape, seed: u64) -> Vec<u32> {
    conformance::random_words(&mut StdRng::seed_from_u64(seed), ring, shape)
}

/// Prints the summary.
pub fn run(backend: &AnyBackend, quick: bool) -> anyhow::Result<()> {
    let reps = if quick { 15 } else { 201 };
    if backend.is_cpu() {
        ntt_vs_tfhe(reps)?;
        scaling(reps / 4 + 1)?;
    } else {
        crate::with_backend!(backend, b => device_ntt(b, reps / 4 + 1)?);
    }
    if backend.is_cpu() {
        cpu_mac_kernels(reps / 8 + 1)?;
    } else {
        crate::with_backend!(backend, b => mac(b, reps / 4 + 1)?);
    }
    crate::with_backend!(backend, b => key_switch_kinds(b, reps / 8 + 1)?);
    #[cfg(feature = "cuda")]
    if let AnyBackend::Cuda(b) = backend {
        ntt_versions(b, reps / 4 + 1)?;
        table_products(b, (reps / 8).max(5))?;
    }
    Ok(())
}

/// The key switch of FastQuery's folded designs at N = 8192 and five 31-bit limbs, both kinds
/// side by side in this one run, coefficient form in and out: the RNS gadget with 16-bit digits
/// (`decompose_mac`, then the two inverse transforms) and hybrid with a 31-bit special prime
/// (`keyswitch_hybrid`), and the hybrid one into the NTT domain (`keyswitch_hybrid_ntt`).
/// A batch of 64 ciphertexts (256 on a GPU; one on an emulator or a software adapter).
fn key_switch_kinds<B: Backend>(b: &Arc<B>, reps: usize) -> anyhow::Result<()> {
    let (n, limbs) = (8192usize, 5usize);
    let info = b.info();
    let (polys, reps) = match (info.accelerator, info.name) {
        (true, _) => (256, reps),
        (false, "cpu") => (64, reps),
        _ => (1, 1), // an emulator or a software adapter: a check that it runs, not a timing
    };
    let ring = Ring::new(b.clone(), Arc::new(RingContext::new(n, &ntt_primes(31, n, limbs + 1)?)?))?;
    let ctx = ring.context().clone();
    let shape = Shape::new(polys, limbs);
    let a: Polys<B, Coeff> = ring.upload(&words(&ctx, shape, 11), shape)?;
    let digits = limbs * ring.digits(limbs, 16);
    let keys = |key: Shape, seed: u64| -> anyhow::Result<[Polys<B, Ntt>; 2]> {
        Ok([ring.upload(&words(&ctx, key, seed), key)?, ring.upload(&words(&ctx, key, seed + 1), key)?])
    };
    let [g0, g1] = keys(Shape::new(digits, limbs), 12)?;
    let [h0, h1] = keys(Shape::new(limbs + 1, limbs + 1), 14)?;
    let gadget = median_us(
        reps,
        || (ring.zeros::<Ntt>(shape).expect("memory"), ring.zeros::<Ntt>(shape).expect("memory")),
        |(mut o0, mut o1)| {
            ring.decompose_mac(&a, 16, [&g0, &g1], [&mut o0, &mut o1], false).expect("shapes match");
            let _ = (ring.inverse(o0).expect("transform"), ring.inverse(o1).expect("transform"));
            b.synchronize().expect("device alive");
        },
    );
    let hybrid = median_us(
        reps,
        || (),
        |()| {
            let _ = ring.keyswitch_hybrid(&a, [&h0, &h1]).expect("shapes match");
            b.synchronize().expect("device alive");
        },
    );
    // The products left in the NTT domain, the input's NTT form beside it (the RGSW conversion's).
    let twin = ring.forward(ring.duplicate(&a)?)?;
    let hybrid_ntt = median_us(
        reps,
        || (),
        |()| {
            let _ = ring.keyswitch_hybrid_ntt(&a, &twin, [&h0, &h1]).expect("shapes match");
            b.synchronize().expect("device alive");
        },
    );
    let per = |t: f64| t / polys as f64;
    println!(
        "Key switch on '{}', N = {n}, {limbs} limbs, {polys} ciphertexts, median of {reps} (us per ciphertext): \
         gadget, 16-bit digits ({} digit rows) {:.1}; hybrid, 31-bit special prime ({} digit rows) {:.1}; \
         hybrid / gadget {:.2}; hybrid into the NTT domain, with the input's twin, {:.1} ({:.2} of hybrid)",
        info.device,
        digits * limbs,
        per(gadget),
        limbs * (limbs + 1),
        per(hybrid),
        hybrid / gadget,
        per(hybrid_ntt),
        hybrid_ntt / hybrid
    );
    Ok(())
}

/// The CUDA NTT kernel generations (`FASTQUERY_CUDA_NTT`, docs/GPU_NOTES.md) side by side in this
/// one run, at the degrees where they differ, with the transformed words compared.
#[cfg(feature = "cuda")]
fn ntt_versions(b: &Arc<fastquery_cuda::CudaBackend>, reps: usize) -> anyhow::Result<()> {
    let (shrink, reps) = if b.info().accelerator { (1, reps) } else { (1024, 1) };
    let allowed = b.ntt_version();
    println!(
        "NTT kernel versions on '{}', median of {reps} (ns per transform, forward / inverse; the batch fills the GPU):",
        b.info().device
    );
    for (n, polys) in [(4096usize, 65536usize), (8192, 32768)] {
        let polys = polys / shrink;
        let ring = ring_on(b, n, 1)?;
        let shape = Shape::new(polys, 1);
        let input = words(ring.context(), shape, 6);
        let mut line = format!("  N = {n:>5}:");
        let mut results = Vec::new();
        for v in fastquery_cuda::NTT_VERSIONS {
            b.set_ntt_version(v)?;
            let (f, i, back) = round_trips(b, &ring, ring.upload::<Coeff>(&input, shape)?, reps)?;
            anyhow::ensure!(
                ring.download(&back)? == input,
                "NTT v{v} at N = {n}: the inverse does not undo the forward"
            );
            results.push(ring.download(&ring.forward(back)?)?);
            line += &format!("  v{v} {:.1} / {:.1}", f * 1e3 / polys as f64, i * 1e3 / polys as f64);
        }
        let same = results.windows(2).all(|w| w[0] == w[1]);
        println!("{line}; identical: {same}");
        anyhow::ensure!(same, "the NTT kernel versions disagree at N = {n}");
    }
    b.set_ntt_version(allowed)?;
    key_switch_versions(b, reps)?;
    split_key_switch(b, reps)
}

/// The two halves of a random key-switching key of `g` digit rows (seeds 8 and 9).
#[cfg(feature = "cuda")]
fn key_pair<B: Backend>(ring: &Ring<B>, g: usize) -> anyhow::Result<[Polys<B, Ntt>; 2]> {
    let shape = Shape::new(g, ring.context().limbs());
    let key = |seed| ring.upload(&words(ring.context(), shape, seed), shape);
    Ok([key(8)?, key(9)?])
}

/// `a`'s key-switch products with `keys` (`w`-bit digits): the median of `reps` calls in
/// microseconds, each waited for, and the two outputs' words.
#[cfg(feature = "cuda")]
fn timed_key_products<B: Backend>(
    b: &Arc<B>,
    ring: &Ring<B>,
    a: &Polys<B, Coeff>,
    w: u32,
    keys: &[Polys<B, Ntt>; 2],
    reps: usize,
) -> anyhow::Result<(f64, [Vec<u32>; 2])> {
    let (mut o0, mut o1): (Polys<B, Ntt>, Polys<B, Ntt>) = (ring.zeros(a.shape())?, ring.zeros(a.shape())?);
    let t = median_us(
        reps,
        || (),
        |()| {
            ring.decompose_mac(a, w, [&keys[0], &keys[1]], [&mut o0, &mut o1], false).expect("shapes match");
            b.synchronize().expect("device alive");
        },
    );
    Ok((t, [ring.download(&o0)?, ring.download(&o1)?]))
}

/// The fused key switch at FastQuery's llama-7b design (N = 8192, five limbs, 16-bit digits: 50
/// transformed digit rows per ciphertext) on NTT versions 1 and 3, side by side, a chunk of 256
/// ciphertexts (the backend's key-switching chunk), outputs compared.
#[cfg(feature = "cuda")]
fn key_switch_versions(b: &Arc<fastquery_cuda::CudaBackend>, reps: usize) -> anyhow::Result<()> {
    let (n, limbs, w) = (8192usize, 5usize, 16u32);
    let (polys, reps) = if b.info().accelerator { (256, reps) } else { (1, 1) };
    let ring = ring_on(b, n, limbs)?;
    let g = limbs * ring.digits(limbs, w);
    let shape = Shape::new(polys, limbs);
    let a: Polys<_, Coeff> = ring.upload(&words(ring.context(), shape, 7), shape)?;
    let keys = key_pair(&ring, g)?;
    let allowed = b.ntt_version();
    let mut line = format!(
        "Fused key switch, N = {n}, {limbs} limbs x {g} digit rows = {} transforms per ciphertext, {polys} ciphertexts (us per ciphertext):",
        limbs * g
    );
    let mut results = Vec::new();
    for v in [1u8, 3] {
        b.set_ntt_version(v)?;
        let (t, out) = timed_key_products(b, &ring, &a, w, &keys, reps)?;
        line += &format!("  v{v} {:.2}", t / polys as f64);
        results.push(out);
    }
    b.set_ntt_version(allowed)?;
    let same = results[0] == results[1];
    println!("{line}; identical: {same}");
    anyhow::ensure!(same, "the fused key switches of NTT versions 1 and 3 disagree");
    Ok(())
}

/// Small key-switch products (the fold's last levels, a one-token expansion: 1 to 16
/// ciphertexts at N = 8192, five limbs, 31-bit digits, the RGSW gadget of the design that runs)
/// fused (one block per output row, its five digit transforms in turn) against split by digit
/// (`FASTQUERY_CUDA_SPLIT_KS`: a block per row and digit, then a sum), microseconds per call,
/// outputs compared. Never run on a GPU before the next lent one.
#[cfg(feature = "cuda")]
fn split_key_switch(b: &Arc<fastquery_cuda::CudaBackend>, reps: usize) -> anyhow::Result<()> {
    let (n, limbs, w) = (8192usize, 5usize, 31u32);
    let (batches, reps): (&[usize], usize) =
        if b.info().accelerator { (&[1, 4, 16], reps) } else { (&[1], 1) };
    let ring = ring_on(b, n, limbs)?;
    let g = limbs * ring.digits(limbs, w);
    let keys = key_pair(&ring, g)?;
    let before = b.split_rows();
    let mut line =
        format!("Small key switches, N = {n}, {limbs} limbs, {g} digit rows (us per call, fused / split):");
    let mut same = true;
    for &polys in batches {
        let shape = Shape::new(polys, limbs);
        let a: Polys<_, Coeff> = ring.upload(&words(ring.context(), shape, 7), shape)?;
        let mut results = Vec::new();
        let mut times = Vec::new();
        for split in [0, usize::MAX] {
            b.set_split_rows(split);
            let (t, out) = timed_key_products(b, &ring, &a, w, &keys, reps)?;
            times.push(t);
            results.push(out);
        }
        same &= results[0] == results[1];
        line += &format!("  {polys}: {:.1} / {:.1}", times[0], times[1]);
    }
    b.set_split_rows(before);
    println!("{line}; identical: {same}");
    anyhow::ensure!(same, "the fused and split key switches disagree");
    Ok(())
}

/// The schemes' table products on CUDA, on the integer pipes (mac_ntt_r8c4_u32) and on the tensor
/// cores (kernels/mma.cu), side by side in this one run, with their results compared.
#[cfg(feature = "cuda")]
fn table_products(b: &Arc<fastquery_cuda::CudaBackend>, reps: usize) -> anyhow::Result<()> {
    // FastQuery's first dimension at llama-7b (16 x 125 by 125 x 128 per request of 8 tokens;
    // 256 rows for 128 tokens in one product), at N = 4096 and 2 limbs so that both fit any
    // GPU's memory; a software device gets a sliver of it.
    let software = !b.info().accelerator;
    let (n, limbs, reps) = if software { (64, 1, 1) } else { (4096, 2, reps) };
    let shapes: &[MacDims] = if software {
        &[MacDims { rows: 16, inner: 16, cols: 32 }]
    } else {
        &[MacDims { rows: 16, inner: 125, cols: 128 }, MacDims { rows: 256, inner: 125, cols: 128 }]
    };
    two_row_products(b, n, limbs, reps, software)?;
    let allowed = b.tensor_cores();
    if !b.set_tensor_cores(true) {
        println!("Table products: this device has no tensor cores (compute capability below 8.0)");
        return Ok(());
    }
    let ring = ring_on(b, n, limbs)?;
    println!(
        "Table products on '{}', N = {n}, {limbs} limbs, median of {reps} (integer pipes | tensor cores):",
        b.info().device
    );
    for &dims in shapes {
        let times = products_both_ways(b, &ring, dims, reps, |on| {
            b.set_tensor_cores(on);
        })
        .map_err(|e| e.context("the tensor-core product differs from the integer one"))?;
        let products = (dims.rows * dims.inner * dims.cols * limbs * n) as f64;
        let bytes =
            ((dims.rows * dims.inner + dims.inner * dims.cols + dims.rows * dims.cols) * limbs * n * 4)
                as f64;
        println!(
            "  {}x{}x{}: {:.0} | {:.0} us ({:.2}x), {:.1} | {:.1} G products/s; operands and result {:.0} MB; identical: true",
            dims.rows,
            dims.inner,
            dims.cols,
            times[0],
            times[1],
            times[0] / times[1],
            products / times[0] / 1e3,
            products / times[1] / 1e3,
            bytes / 1e6,
        );
    }
    b.set_tensor_cores(allowed);
    Ok(())
}

/// One table product of `dims` on random operands, timed (median of `reps` microseconds) with
/// `choose(false)` and then `choose(true)` selecting the kernel; an error unless both give the
/// same words.
#[cfg(feature = "cuda")]
fn products_both_ways(
    b: &Arc<fastquery_cuda::CudaBackend>,
    ring: &Ring<fastquery_cuda::CudaBackend>,
    dims: MacDims,
    reps: usize,
    choose: impl Fn(bool),
) -> anyhow::Result<[f64; 2]> {
    let limbs = ring.context().limbs();
    let a_shape = Shape::new(dims.rows * dims.inner, limbs);
    let b_shape = Shape::new(dims.inner * dims.cols, limbs);
    let a: Polys<_, Ntt> = ring.upload(&words(ring.context(), a_shape, 3), a_shape)?;
    let w: Polys<_, Ntt> = ring.upload(&words(ring.context(), b_shape, 4), b_shape)?;
    let mut times = [0.0f64; 2];
    let mut results = Vec::new();
    for (k, on) in [false, true].into_iter().enumerate() {
        choose(on);
        let mut out: Polys<_, Ntt> = ring.zeros(Shape::new(dims.rows * dims.cols, limbs))?;
        times[k] = median_us(
            reps,
            || (),
            |()| {
                ring.mac(&mut out, &a, &w, dims, false).expect("shapes match");
                b.synchronize().expect("device alive");
            },
        );
        results.push(ring.download(&out)?);
    }
    anyhow::ensure!(results[0] == results[1], "the two kernels' words differ for {dims:?}");
    Ok(times)
}

/// The one-token table products (two rows: FastQuery's 2 x 125 by 125 x 128 at llama-7b and
/// Cheetah's 2 x 180 by 180 x 179) on the 8 x 4 tile and on the two-row kernel with prefetching,
/// side by side in this one run, with the table's bytes per second (the memory floor's measure)
/// and the words compared.
#[cfg(feature = "cuda")]
fn two_row_products(
    b: &Arc<fastquery_cuda::CudaBackend>,
    n: usize,
    limbs: usize,
    reps: usize,
    software: bool,
) -> anyhow::Result<()> {
    let shapes: &[MacDims] = if software {
        &[MacDims { rows: 2, inner: 5, cols: 9 }]
    } else {
        &[MacDims { rows: 2, inner: 125, cols: 128 }, MacDims { rows: 2, inner: 180, cols: 179 }]
    };
    let allowed = b.two_row_mac();
    let ring = ring_on(b, n, limbs)?;
    println!(
        "One-token table products on '{}', N = {n}, {limbs} limbs, median of {reps} (8 x 4 tile | 2 x 8 with prefetch):",
        b.info().device
    );
    for &dims in shapes {
        let times = products_both_ways(b, &ring, dims, reps, |on| b.set_two_row_mac(on))
            .map_err(|e| e.context("the two-row product differs from the 8 x 4 one"))?;
        let table = (dims.inner * dims.cols * limbs * n * 4) as f64;
        println!(
            "  {}x{}x{}: {:.0} | {:.0} us ({:.2}x); table {:.0} MB read at {:.0} | {:.0} GB/s; identical: true",
            dims.rows,
            dims.inner,
            dims.cols,
            times[0],
            times[1],
            times[0] / times[1],
            table / 1e6,
            table / times[0] / 1e3,
            table / times[1] / 1e3,
        );
    }
    b.set_two_row_mac(allowed);
    Ok(())
}

/// `reps` forward and inverse transforms of `p` in place, each timed with the device
/// synchronised: the median microseconds of each direction, and `p` after the round trips.
fn round_trips<B: Backend>(
    b: &Arc<B>,
    ring: &Ring<B>,
    p: Polys<B, Coeff>,
    reps: usize,
) -> anyhow::Result<(f64, f64, Polys<B, Coeff>)> {
    let mut slot = Some(p);
    let (mut tf, mut ti) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let p = slot.take().expect("refilled below");
        let t = Instant::now();
        let p = ring.forward(p)?;
        b.synchronize()?;
        tf.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        slot = Some(ring.inverse(p)?);
        b.synchronize()?;
        ti.push(t.elapsed().as_secs_f64() * 1e6);
    }
    tf.sort_by(f64::total_cmp);
    ti.sort_by(f64::total_cmp);
    Ok((tf[tf.len() / 2], ti[ti.len() / 2], slot.expect("kept")))
}

/// The device's copy bandwidth in GB/s, bytes read plus bytes written: the median of `reps`
/// device-side copies of `words` random words into a buffer allocated (and written) before the
/// timed region, the device synchronised inside it. Allocating the destination inside the timed
/// region, as `duplicate` does, measured a quarter of an H200's bandwidth at 256 MiB
/// (1.03-1.22 TB/s against 4.08, 2026-12-04).
pub(crate) fn copy_bandwidth<B: Backend>(b: &Arc<B>, words: usize, reps: usize) -> anyhow::Result<f64> {
    use rand::RngCore as _;
    let mut rng = StdRng::seed_from_u64(words as u64);
    let src = b.upload_vec((0..words).map(|_| rng.next_u32()).collect())?;
    let mut dst = b.alloc_zeroed(words)?;
    b.copy_words(&src, 0, &mut dst, 0, words)?;
    let mut times = Vec::new();
    for _ in 0..reps.max(1) {
        b.synchronize()?;
        let t = Instant::now();
        b.copy_words(&src, 0, &mut dst, 0, words)?;
        b.synchronize()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((2 * words * 4) as f64 / times[times.len() / 2] / 1e9)
}

/// Batched NTT on an accelerator at a batch that fills it, timed with the device synchronised
/// inside the timed region; the memory floor (read and write each word once) beside it.
fn device_ntt<B: Backend>(b: &Arc<B>, reps: usize) -> anyhow::Result<()> {
    // A software device (lavapipe, the CUDA emulator) gets batches 1024 times smaller and three
    // repetitions: its numbers say nothing about a GPU, and full batches would take hours.
    let (shrink, reps) = if b.info().accelerator { (1, reps) } else { (1024, 3) };
    if shrink > 1 {
        println!("(a software device: batches {shrink}x smaller than on a GPU, {reps} repetitions)");
    }
    // The memory ceiling: a device-to-device copy of 1 GiB, bytes read plus written.
    let count = (1usize << 28) / shrink;
    let bw = copy_bandwidth(b, count, reps.min(21))?;
    println!(
        "Device copy bandwidth ({} MiB, read + write): {bw:.0} GB/s; NTT floor at N = 4096: {:.1} ns",
        (count * 4) >> 20,
        32768.0 / bw
    );
    println!("Batched NTT on '{}' ({}), median of {reps}:", b.info().name, b.info().device);
    for (n, polys) in [(4096usize, 65536usize), (8192, 32768), (16384, 16384)] {
        let polys = polys / shrink;
        let ring = ring_on(b, n, 1)?;
        let shape = Shape::new(polys, 1);
        let p = ring.upload::<Coeff>(&words(ring.context(), shape, 5), shape)?;
        let (f, i, _) = round_trips(b, &ring, p, reps)?;
        println!(
            "  N = {n:>5}, {polys} transforms: forward {:.1} ns, inverse {:.1} ns per transform ({:.2} / {:.2} ms per batch; {:.1} MB moved)",
            f * 1e3 / polys as f64,
            i * 1e3 / polys as f64,
            f / 1e3,
            i / 1e3,
            (2 * polys * n * 4) as f64 / 1e6
        );
    }
    Ok(())
}

fn ntt_vs_tfhe(reps: usize) -> anyhow::Result<()> {
    let one = Arc::new(CpuBackend::with_threads(1)?);
    let batch = 4;
    println!("NTT on one thread, per transform (batch of {batch}, 30-bit prime), median of {reps}:");
    println!("      N  fwd fastquery  fwd tfhe-ntt  ratio  inv fastquery  inv tfhe-ntt  ratio");
    for n in [2048usize, 4096, 8192, 16384] {
        let ring = ring_on(&one, n, 1)?;
        let shape = Shape::new(batch, 1);
        let w = words(ring.context(), shape, n as u64);
        let plan = tfhe_ntt::prime32::Plan::try_new(n, ring.context().moduli()[0].value())
            .ok_or_else(|| anyhow::anyhow!("tfhe-ntt has no plan for N = {n}"))?;
        let per = batch as f64;
        let ours_f = median_us(
            reps,
            || ring.upload::<Coeff>(&w, shape).expect("valid words"),
            |p| drop(ring.forward(p)),
        ) / per;
        let theirs_f =
            median_us(reps, || w.clone(), |mut x| x.chunks_exact_mut(n).for_each(|c| plan.fwd(c))) / per;
        let ours_i = median_us(
            reps,
            || ring.upload::<Ntt>(&w, shape).expect("valid words"),
            |p| drop(ring.inverse(p)),
        ) / per;
        let theirs_i = median_us(
            reps,
            || w.clone(),
            |mut x| {
                x.chunks_exact_mut(n).for_each(|c| {
                    plan.inv(c);
                    plan.normalize(c);
                })
            },
        ) / per;
        println!(
            "  {n:>5}  {ours_f:>10.2} us  {theirs_f:>9.2} us  {:>5.2}  {ours_i:>10.2} us  {theirs_i:>9.2} us  {:>5.2}",
            ours_f / theirs_f,
            ours_i / theirs_i
        );
    }
    Ok(())
}

fn scaling(reps: usize) -> anyhow::Result<()> {
    // A resident batch transformed forward and back in place, as a pipeline on one backend does:
    // no host copy in the loop, so both thread counts see the same cache state.
    let (n, limbs, polys) = (4096, 2, 64);
    let shape = Shape::new(polys, limbs);
    let mut times = Vec::new();
    for threads in [1usize, 2] {
        let ring = ring_on(&Arc::new(CpuBackend::with_threads(threads)?), n, limbs)?;
        let mut slot = Some(ring.upload::<Coeff>(&words(ring.context(), shape, 9), shape)?);
        let t = median_us(
            reps,
            || (),
            |()| {
                let p = slot.take().expect("refilled below");
                let p = ring.forward(p).expect("shape checked at upload");
                slot = Some(ring.inverse(p).expect("shape checked at upload"));
            },
        );
        times.push(t);
    }
    println!(
        "Batched NTT round trip, {polys} polys x {limbs} limbs, N = {n}: 1 thread {:.0} us, 2 threads {:.0} us, \
         speed-up {:.2}x (machine has {} cores)",
        times[0],
        times[1],
        times[0] / times[1],
        std::thread::available_parallelism().map_or(1, |c| c.get())
    );
    Ok(())
}

/// The CPU's multiply-accumulate kernels side by side in this one run (each where the CPU has
/// its instructions), on the kernel shapes of [`mac`] and on a slice of FastQuery's folded
/// llama-7b product (16 rows: 8 tokens, two per record; 125 one-hot terms; N = 8192, five limbs;
/// 4 of its 128 columns), with every kernel's words compared with the portable one's.
fn cpu_mac_kernels(reps: usize) -> anyhow::Result<()> {
    let kernels: Vec<MacKernel> = [MacKernel::Portable, MacKernel::Avx2, MacKernel::Avx512]
        .into_iter()
        .filter(|&k| CpuBackend::new().with_mac_kernel(k).mac_kernel() == k)
        .collect();
    println!(
        "Multiply-accumulate on the CPU, median of {reps} (G coefficient products/s; {} threads):",
        CpuBackend::new().threads()
    );
    println!(
        "  {:<22} {}",
        "rows x inner x cols",
        kernels.iter().map(|k| format!("{:>10}", format!("{k:?}"))).collect::<String>()
    );
    let shapes = [
        (4096usize, 2usize, MacDims { rows: 2, inner: 32, cols: 8 }),
        (4096, 2, MacDims { rows: 16, inner: 32, cols: 8 }),
        (8192, 5, MacDims { rows: 16, inner: 125, cols: 4 }),
    ];
    for (n, limbs, dims) in shapes {
        let mut rates = String::new();
        let mut first: Option<Vec<u32>> = None;
        for &k in &kernels {
            let ring = ring_on(&Arc::new(CpuBackend::new().with_mac_kernel(k)), n, limbs)?;
            let (t, got) = timed_mac(&ring, dims, reps)?;
            match &first {
                None => first = Some(got),
                Some(f) => {
                    anyhow::ensure!(*f == got, "the {k:?} multiply-accumulate differs from the portable one")
                }
            }
            let macs = (dims.rows * dims.inner * dims.cols * limbs * n) as f64;
            rates += &format!("{:>10.2}", macs / t / 1e3);
        }
        let shape = format!("{}x{}x{} (N={n}, {limbs} limbs)", dims.rows, dims.inner, dims.cols);
        println!("  {shape:<22} {rates}");
    }
    Ok(())
}

/// The median time in microseconds of `ring.mac` on random operands of `dims` (all the ring's
/// limbs, no accumulation), and the words it wrote.
fn timed_mac<B: Backend>(ring: &Ring<B>, dims: MacDims, reps: usize) -> anyhow::Result<(f64, Vec<u32>)> {
    let limbs = ring.context().moduli().len();
    let (xs, ys) = (Shape::new(dims.rows * dims.inner, limbs), Shape::new(dims.inner * dims.cols, limbs));
    let a: Polys<B, Ntt> = ring.upload(&words(ring.context(), xs, 1), xs)?;
    let w: Polys<B, Ntt> = ring.upload(&words(ring.context(), ys, 2), ys)?;
    let mut out: Polys<B, Ntt> = ring.zeros(Shape::new(dims.rows * dims.cols, limbs))?;
    let t = median_us(
        reps,
        || (),
        |()| {
            ring.mac(&mut out, &a, &w, dims, false).expect("shapes match");
            ring.backend().synchronize().expect("device alive");
        },
    );
    Ok((t, ring.download(&out)?))
}

fn mac<B: Backend>(b: &Arc<B>, reps: usize) -> anyhow::Result<()> {
    let (n, limbs) = (4096, 2);
    let ring = ring_on(b, n, limbs)?;
    // A software device other than the CPU backend (lavapipe, the CUDA emulator): one repetition.
    let info = b.info();
    let reps = if info.accelerator || info.name == "cpu" { reps } else { 1 };
    println!("Multiply-accumulate on '{}', N = {n}, {limbs} limbs:", info.name);
    for dims in [MacDims { rows: 2, inner: 32, cols: 8 }, MacDims { rows: 16, inner: 32, cols: 8 }] {
        let (t, _) = timed_mac(&ring, dims, reps)?;
        let macs = (dims.rows * dims.inner * dims.cols * limbs * n) as f64;
        // Bytes of the plaintext operand, read once per call: the memory floor of the kernel.
        let table_mb = (dims.inner * dims.cols * limbs * n * 4) as f64 / 1e6;
        println!(
            "  {}x{}x{}: {t:.0} us, {:.2} G coefficient-MACs/s, plaintext operand {table_mb:.1} MB read at {:.1} GB/s",
            dims.rows,
            dims.inner,
            dims.cols,
            macs / t / 1e3,
            table_mb * 1e6 / t / 1e3
        );
    }
    Ok(())
}
