//! # fastquery-backend
//!
//! The backend-agnostic layer between the math (`fastquery-math`, `fastquery-ntt`) and everything
//! that computes with polynomials (the HE scheme, the protocol, the server).
//!
//! * [`RingContext`]: a ring `Z_q[X]/(X^N+1)` with `q` an RNS product of word-sized primes, and
//!   the NTT tables of each prime. Host-side, validated once.
//! * [`Backend`]: what a compute backend (CPU, CUDA, wgpu) implements. Buffers stay on the
//!   device between operations; only [`Ring::upload`] and [`Ring::download`] cross to the host.
//! * [`Ring`] and [`Polys`]: the typed front end. A [`Polys`] is a batch of polynomials on one
//!   device, with its representation ([`Coeff`] or [`Ntt`]) in its type, so that, for example,
//!   a multiply-accumulate on coefficient-form data does not compile. Shapes, rings and inputs
//!   are checked here, once, so backends can trust them.
//!
//! ## Data layout (every backend)
//! A buffer of `polys` polynomials with `limbs` limbs of degree `N` is `polys * limbs * N`
//! words, ordered `[poly][limb][coefficient]`; limb `l` is the residue mod prime `l` of the ring
//! (a buffer with fewer limbs than the ring uses its first primes). NTT-form data is in the
//! canonical order of `fastquery-ntt`. Every word is fully reduced. Two backends given the same
//! inputs return the same words.
#![forbid(unsafe_code)]

mod error;
pub mod host;
mod poly;
mod ring;
pub mod work;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::BackendError;
pub use host::automorphism_index;
pub use poly::{Coeff, MacDims, MacOperand, Ntt, Polys, Repr, Shape};
pub use ring::{Ring, RingContext};

/// What a backend reports about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// Short name: `cpu`, `cuda`, `wgpu`.
    pub name: &'static str,
    /// The device in words (CPU model and thread count, GPU name).
    pub device: String,
    /// Whether the device is a real accelerator (a software rasteriser is not).
    pub accelerator: bool,
    /// Bytes of the device's own memory, where it has its own and says (`None`: host memory,
    /// or unknown). Servers size their working sets by it.
    pub memory: Option<u64>,
}

/// A compute backend: device memory and the polynomial kernels over it.
///
/// Implementations receive arguments already validated by [`Ring`] (shapes match, residues are
/// reduced, rings match), so they only need to compute. `limbs` in a [`Shape`] never exceeds the
/// ring's, and buffers are exactly `shape.words(n)` long.
pub trait Backend: Send + Sync + 'static {
    /// Device memory holding `u32` words.
    type Buffer: Send + Sync;
    /// Device-resident data of one ring (twiddle tables, moduli).
    type Ring: Send + Sync;

    /// Name and device.
    fn info(&self) -> BackendInfo;

    /// Waits until all queued work is done (asynchronous devices); timings call it inside the
    /// timed region. Synchronous backends need not override it.
    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Moves the ring's tables to the device.
    fn load_ring(&self, ring: &RingContext) -> Result<Self::Ring, BackendError>;

    /// A buffer of `words` zeros.
    fn alloc_zeroed(&self, words: usize) -> Result<Self::Buffer, BackendError>;
    /// A buffer holding `words`.
    fn upload(&self, words: &[u32]) -> Result<Self::Buffer, BackendError>;
    /// A buffer holding `words`, which it may keep: a host backend takes the allocation as
    /// it is (a table's preprocessed records are gigabytes); a device copies it.
    fn upload_vec(&self, words: Vec<u32>) -> Result<Self::Buffer, BackendError> {
        self.upload(&words)
    }
    /// Copies a whole buffer back to the host (`out.len()` equals the buffer's length).
    fn download(&self, buf: &Self::Buffer, out: &mut [u32]) -> Result<(), BackendError>;
    /// A device-side copy.
    fn duplicate(&self, buf: &Self::Buffer) -> Result<Self::Buffer, BackendError>;

    /// Copies `words` words from `src[src_at..]` to `dst[dst_at..]` on the device (ranges
    /// checked by [`Ring::copy_polys`]).
    fn copy_words(
        &self,
        src: &Self::Buffer,
        src_at: usize,
        dst: &mut Self::Buffer,
        dst_at: usize,
        words: usize,
    ) -> Result<(), BackendError>;

    /// The first `words` words of `buf` (`words <= buf`'s length), as a buffer of that length;
    /// the rest is dropped. The default copies them into a new buffer; a host backend keeps the
    /// allocation (zeroing the words it drops, as a freed buffer is).
    fn truncate(&self, buf: Self::Buffer, words: usize) -> Result<Self::Buffer, BackendError> {
        let mut out = self.alloc_zeroed(words)?;
        if words > 0 {
            self.copy_words(&buf, 0, &mut out, 0, words)?;
        }
        Ok(out)
    }

    /// A new buffer of `shape` holding `src[minuend..] - src[subtrahend..]` coefficient-wise
    /// (word offsets into `src`, each range `shape.words(n)` long, checked by
    /// [`Ring::difference`]). The default copies both ranges out and subtracts.
    fn difference(
        &self,
        ring: &Self::Ring,
        src: &Self::Buffer,
        (minuend, subtrahend): (usize, usize),
        shape: Shape,
        n: usize,
    ) -> Result<Self::Buffer, BackendError> {
        let words = shape.words(n);
        let mut out = self.alloc_zeroed(words)?;
        if words == 0 {
            return Ok(out);
        }
        let mut sub = self.alloc_zeroed(words)?;
        self.copy_words(src, minuend, &mut out, 0, words)?;
        self.copy_words(src, subtrahend, &mut sub, 0, words)?;
        self.sub_assign(ring, &mut out, &sub, shape)?;
        Ok(out)
    }

    /// The inverse NTT of a copy of `src` (`src` unchanged). The default duplicates, then
    /// transforms; a host backend copies each row just before transforming it, in cache.
    fn ntt_inverse_copy(
        &self,
        ring: &Self::Ring,
        src: &Self::Buffer,
        shape: Shape,
    ) -> Result<Self::Buffer, BackendError> {
        let mut out = self.duplicate(src)?;
        self.ntt_inverse(ring, &mut out, shape)?;
        Ok(out)
    }

    /// Forward canonical NTT of every `(poly, limb)` row, in place.
    fn ntt_forward(
        &self,
        ring: &Self::Ring,
        buf: &mut Self::Buffer,
        shape: Shape,
    ) -> Result<(), BackendError>;
    /// Inverse canonical NTT of every row, in place (`N^{-1}` included).
    fn ntt_inverse(
        &self,
        ring: &Self::Ring,
        buf: &mut Self::Buffer,
        shape: Shape,
    ) -> Result<(), BackendError>;

    /// `a += b` coefficient-wise.
    fn add_assign(
        &self,
        ring: &Self::Ring,
        a: &mut Self::Buffer,
        b: &Self::Buffer,
        shape: Shape,
    ) -> Result<(), BackendError>;
    /// `a -= b` coefficient-wise.
    fn sub_assign(
        &self,
        ring: &Self::Ring,
        a: &mut Self::Buffer,
        b: &Self::Buffer,
        shape: Shape,
    ) -> Result<(), BackendError>;
    /// `a = -a`.
    fn neg_assign(&self, ring: &Self::Ring, a: &mut Self::Buffer, shape: Shape) -> Result<(), BackendError>;
    /// `a *= c` with `c` given by its residue per limb (`scalars.len() == shape.limbs`).
    fn scalar_mul_assign(
        &self,
        ring: &Self::Ring,
        a: &mut Self::Buffer,
        scalars: &[u32],
        shape: Shape,
    ) -> Result<(), BackendError>;
    /// `a *= b` coefficient-wise (in the NTT domain: the negacyclic product).
    fn mul_assign(
        &self,
        ring: &Self::Ring,
        a: &mut Self::Buffer,
        b: &Self::Buffer,
        shape: Shape,
    ) -> Result<(), BackendError>;
    /// `a *= X^k` for `0 <= k < 2N`, coefficient form (a negacyclic rotation).
    fn monomial_mul_assign(
        &self,
        ring: &Self::Ring,
        a: &mut Self::Buffer,
        k: usize,
        shape: Shape,
    ) -> Result<(), BackendError>;

    /// Ciphertexts per key-switching call the backend works best with: key switching, the
    /// expansion and external products cut their batches into chunks of this many. On the CPU
    /// it bounds the digit buffers of one call (`limbs * digits` polynomials per ciphertext,
    /// kept in cache); a GPU wants enough blocks per launch to fill its multiprocessors, and
    /// fewer launches.
    fn keyswitch_chunk(&self) -> usize {
        16
    }

    /// Ciphertexts per call of the key-switching products outside the expansion (external
    /// products, the key switches of packing): the temporaries a call makes (the composed
    /// default's digit rows, `limbs * digits * limbs` polynomials per ciphertext) bound it, so
    /// the default is [`Backend::keyswitch_chunk`]. A backend whose products keep their digits
    /// per task (at degree `n`) takes a batch whole: a chunked caller copies every chunk out
    /// and back.
    fn key_product_chunk(&self, n: usize) -> usize {
        let _ = n;
        self.keyswitch_chunk()
    }

    /// Per-kernel device time since the last call (most time first), where the backend times
    /// its launches (the CUDA backend with `FASTQUERY_CUDA_PROFILE=1`); waits for the device.
    /// None: the backend does not time kernels. A diagnostic: what a request's device time is
    /// made of.
    fn kernel_times(&self) -> Result<Option<Vec<work::KernelTime>>, BackendError> {
        Ok(None)
    }

    /// Device time of every launch timed so far, in milliseconds (not reset by
    /// [`Self::kernel_times`]); waits for the device. None where the backend does not time
    /// kernels. `FASTQUERY_TRACE=sync` reads it at each phase's end: a phase's device time beside
    /// its wall time says how long the device sat idle in it.
    fn kernel_ms_so_far(&self) -> Result<Option<f64>, BackendError> {
        Ok(None)
    }

    /// Host threads the backend works with, where it bounds them (the CPU backend's pool): how
    /// many tokens a caller folds together (the fold server's groups; the harness reports it).
    /// None: no bound (a GPU), a caller's whole batch at once.
    fn host_threads(&self) -> Option<usize> {
        None
    }

    /// Whether the backend computes on an NVIDIA GPU (the CUDA backend, or its emulator, which
    /// runs the GPU's code): the design search then estimates with its GPU profile. False for
    /// the others (wgpu's costs are not modelled; it ranks like a CPU).
    fn gpu(&self) -> bool {
        false
    }

    /// Modulus switching down, coefficient form: `out = round(a / (p_k * ... * p_{L-1}))` where
    /// `a` has `in_limbs = L` limbs and `out` keeps the first `k` (`1 <= k < L`). Exact: each
    /// dropped limb is divided out with its centred remainder (ties away from the divisor's
    /// half; see the conformance reference).
    fn mod_switch_down(
        &self,
        ring: &Self::Ring,
        a: &Self::Buffer,
        polys: usize,
        in_limbs: usize,
        out: &mut Self::Buffer,
        out_limbs: usize,
    ) -> Result<(), BackendError>;

    /// Signed gather within every `(poly, limb)` row: `out[k] = a[idx[k] & 0x7fff_ffff]`,
    /// negated mod the limb's prime where bit 31 of `idx[k]` is set. Galois automorphisms in
    /// both forms are such gathers ([`automorphism_index`]). `idx.len() == N`, indices below N.
    ///
    /// The default runs on the host through [`Backend::download`] and [`Backend::upload`]:
    /// correct on every backend, and a device kernel may override it.
    fn gather_signed(
        &self,
        _ring: &Self::Ring,
        ctx: &RingContext,
        out: &mut Self::Buffer,
        a: &Self::Buffer,
        idx: &[u32],
        shape: Shape,
    ) -> Result<(), BackendError> {
        let n = ctx.n();
        let mut src = vec![0u32; shape.words(n)];
        self.download(a, &mut src)?;
        let mut dst = vec![0u32; src.len()];
        host::gather_signed(ctx, &src, &mut dst, idx, shape);
        *out = self.upload(&dst)?;
        Ok(())
    }

    /// Gadget decomposition of coefficient-form `a` (`polys` x `limbs`): for every polynomial,
    /// limb `i` and digit `j < digits`, the polynomial whose coefficients are the integers
    /// `(a[i] >> (j * digit_bits)) mod 2^digit_bits`, reduced into each of the `limbs` primes.
    /// `out` holds `polys * limbs * digits` polynomials of `limbs` limbs, ordered
    /// `[poly][i][j]`. With the CRT gadget `g[i][j] = 2^(j w) (q/p_i) [(q/p_i)^-1]_{p_i}`,
    /// `sum_ij out[ij] * g[ij] = a (mod q)`. Default on the host, like [`Backend::gather_signed`].
    #[allow(clippy::too_many_arguments)]
    fn decompose(
        &self,
        _ring: &Self::Ring,
        ctx: &RingContext,
        a: &Self::Buffer,
        polys: usize,
        limbs: usize,
        digit_bits: u32,
        digits: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        let n = ctx.n();
        let mut src = vec![0u32; polys * limbs * n];
        self.download(a, &mut src)?;
        let mut dst = vec![0u32; polys * limbs * digits * limbs * n];
        host::decompose(ctx, &src, polys, limbs, digit_bits, digits, &mut dst);
        *out = self.upload(&dst)?;
        Ok(())
    }

    /// Uniform polynomials from 32-byte seeds, exactly [`host::expand_uniform_into`]: seed `s`
    /// fills polynomials `[s * polys, (s + 1) * polys)` of `out`, each of `limbs` limbs (so
    /// `out` holds `seeds.len() * polys * limbs * N` words). The server expands the `a` half of
    /// every seeded query ciphertext this way. The default runs on the host and uploads.
    fn expand_seeds(
        &self,
        _ring: &Self::Ring,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        polys: usize,
        limbs: usize,
        out: &mut Self::Buffer,
    ) -> Result<(), BackendError> {
        let per = polys * limbs * ctx.n();
        let mut words = vec![0u32; seeds.len() * per];
        for (seed, dst) in seeds.iter().zip(words.chunks_exact_mut(per.max(1))) {
            host::expand_uniform_into(ctx, limbs, seed, dst);
        }
        *out = self.upload(&words)?;
        Ok(())
    }

    /// [`Backend::expand_seeds`] (one polynomial per seed) written into place: seed `s` fills
    /// polynomial `first + (s / group) * stride + s % group` of `out`, each polynomial
    /// `limbs * N` words; nothing else of `out` changes. The server's query expansion puts
    /// each token's `a` halves beside its `c0` halves this way (ranges checked by
    /// [`Ring::expand_seeds_into`]). The default expands into a new buffer at once and copies
    /// each group of `group` polynomials; a host backend writes in place.
    #[allow(clippy::too_many_arguments)]
    fn expand_seeds_into(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        limbs: usize,
        out: &mut Self::Buffer,
        (first, group, stride): (usize, usize, usize),
    ) -> Result<(), BackendError> {
        let poly = limbs * ctx.n();
        let mut all = self.alloc_zeroed(seeds.len() * poly)?;
        self.expand_seeds(ring, ctx, seeds, 1, limbs, &mut all)?;
        for g in 0..seeds.len() / group.max(1) {
            self.copy_words(&all, g * group * poly, out, (first + g * stride) * poly, group * poly)?;
        }
        Ok(())
    }

    /// The noise of public-key encryptions of zero, exactly [`host::zero_noise_into`]: seed `s`
    /// fills polynomial `s` of `u` (ternary), `e0` and `e1` (centred binomial with `eta`), each of
    /// `limbs` limbs, coefficient form (each output holds `seeds.len() * limbs * N` words). The
    /// server's last step draws these for every response ciphertext. The default runs on the
    /// host and uploads.
    #[allow(clippy::too_many_arguments)]
    fn zero_noise(
        &self,
        _ring: &Self::Ring,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        limbs: usize,
        eta: u32,
        out: [&mut Self::Buffer; 3],
    ) -> Result<(), BackendError> {
        let per = limbs * ctx.n();
        let mut words =
            [vec![0u32; seeds.len() * per], vec![0u32; seeds.len() * per], vec![0u32; seeds.len() * per]];
        let [u, e0, e1] = &mut words;
        for (s, seed) in seeds.iter().enumerate() {
            let r = s * per..(s + 1) * per;
            host::zero_noise_into(
                ctx,
                limbs,
                seed,
                eta,
                &mut u[r.clone()],
                Some(&mut e0[r.clone()]),
                &mut e1[r],
            );
        }
        let [o0, o1, o2] = out;
        *o0 = self.upload(&words[0])?;
        *o1 = self.upload(&words[1])?;
        *o2 = self.upload(&words[2])?;
        Ok(())
    }

    /// `u` and `e1` of [`Backend::zero_noise`], word for word, without `e0`: for encryptions of
    /// zero whose `c0` is kept at a few coefficients only, whose errors the caller draws itself.
    /// The default draws all three and drops `e0`; a backend may skip writing it.
    #[allow(clippy::too_many_arguments)]
    fn zero_noise_c1(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        seeds: &[[u8; 32]],
        limbs: usize,
        eta: u32,
        out: [&mut Self::Buffer; 2],
    ) -> Result<(), BackendError> {
        let mut e0 = self.alloc_zeroed(seeds.len() * limbs * ctx.n())?;
        let [u, e1] = out;
        self.zero_noise(ring, ctx, seeds, limbs, eta, [u, &mut e0, e1])
    }

    /// `out[k] = a[idx[k]]`: single words of a buffer brought to the host (a finish's kept
    /// coefficients). Indices are checked by the [`Ring`]. The default downloads the buffer.
    fn gather_words(
        &self,
        a: &Self::Buffer,
        words: usize,
        idx: &[u32],
        out: &mut [u32],
    ) -> Result<(), BackendError> {
        let mut all = vec![0u32; words];
        self.download(a, &mut all)?;
        for (o, &i) in out.iter_mut().zip(idx) {
            *o = all[i as usize];
        }
        Ok(())
    }

    /// A finish's flooding and masks ([`host::Flooding`]) added at the kept coefficients of
    /// `seeds.len()` ciphertexts of `limbs` limbs (coefficient form), word for word
    /// [`host::flood_mask_add`]: ciphertext `ct` keeps `positions[starts[ct]..starts[ct + 1]]`.
    /// The [`Ring`] checks the shapes, that every position is below `N` and that none repeats
    /// within a ciphertext. The default downloads the buffer, adds on the host and uploads; a
    /// device draws the words where the buffer is (only the positions travel).
    #[allow(clippy::too_many_arguments)]
    fn flood_mask_add(
        &self,
        _ring: &Self::Ring,
        ctx: &RingContext,
        a: &mut Self::Buffer,
        limbs: usize,
        spec: &host::Flooding,
        seeds: &[[u8; 32]],
        (positions, starts): (&[u32], &[u32]),
    ) -> Result<(), BackendError> {
        let mut words = vec![0u32; seeds.len() * limbs * ctx.n()];
        self.download(a, &mut words)?;
        host::flood_mask_add(&ctx.moduli()[..limbs], ctx.n(), spec, seeds, positions, starts, &mut words);
        *a = self.upload(&words)?;
        Ok(())
    }

    /// The product of key switching and of external products: the digits of `a` (coefficient
    /// form, `polys x limbs`, decomposed as in [`Backend::decompose`]) in the NTT domain times
    /// two key operands, `out[k][r] (+)= sum_e NTT(D_e(a[r])) * keys[k][e]` for `k = 0, 1` and
    /// `e < limbs * digits` (each key holds `limbs * digits` polynomials, each output `polys`;
    /// all NTT form, `limbs` limbs). The default materialises the digits (decompose, forward,
    /// two [`Backend::mac`] calls); a backend may fuse the steps so that the digits never leave
    /// the cache.
    #[allow(clippy::too_many_arguments)]
    fn decompose_mac(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        a: &Self::Buffer,
        (polys, limbs): (usize, usize),
        (digit_bits, digits): (u32, usize),
        keys: [&Self::Buffer; 2],
        out: [&mut Self::Buffer; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        composed_decompose_mac(
            self,
            ring,
            ctx,
            a,
            (polys, limbs),
            (digit_bits, digits),
            keys,
            out,
            accumulate,
        )
    }

    /// [`Backend::decompose_mac`] with one digit per limb (each digit a whole residue), given
    /// also the NTT form of `a` (`twin`, the same shape): digit `l` reduced into limb `l` is
    /// then row `l` of `twin`, so a backend may copy it instead of transforming it (one of the
    /// `limbs` digit transforms of every output row). `twin` must be `a`'s transform; the
    /// caller guarantees it (the ring checks shapes). The default ignores it.
    #[allow(clippy::too_many_arguments)]
    fn decompose_mac_twin(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        a: &Self::Buffer,
        twin: &Self::Buffer,
        (polys, limbs): (usize, usize),
        digit_bits: u32,
        keys: [&Self::Buffer; 2],
        out: [&mut Self::Buffer; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let _ = twin;
        self.decompose_mac(ring, ctx, a, (polys, limbs), (digit_bits, 1), keys, out, accumulate)
    }

    /// [`Backend::decompose_mac`] (with `twin`, [`Backend::decompose_mac_twin`]) with `sets`
    /// keys side by side: each of `keys` holds `sets` consecutive sets of `limbs * digits`
    /// polynomials, and polynomial `r` of `a` meets set `r % sets` (`polys` a multiple of
    /// `sets`, checked by [`Ring`]). A batch whose ciphertexts belong to `sets` tokens in turn
    /// then takes each token's own key (its RGSW) in one call. The default
    /// ([`composed_decompose_mac_sets`]) runs each set on its own, gathering its polynomials;
    /// a backend may select the key per row instead.
    #[allow(clippy::too_many_arguments)]
    fn decompose_mac_sets(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        a: &Self::Buffer,
        twin: Option<&Self::Buffer>,
        (polys, limbs): (usize, usize),
        (digit_bits, digits): (u32, usize),
        keys: [&Self::Buffer; 2],
        out: [&mut Self::Buffer; 2],
        (accumulate, sets): (bool, usize),
    ) -> Result<(), BackendError> {
        composed_decompose_mac_sets(
            self,
            ring,
            ctx,
            a,
            twin,
            (polys, limbs),
            (digit_bits, digits),
            keys,
            out,
            (accumulate, sets),
        )
    }

    /// Copies whole polynomials of `poly` words: for each `[from, to]` of `moves`, polynomial
    /// `from` of `src` to polynomial `to` of `dst` (checked by [`Ring::copy_polys_at`]: in
    /// range, no polynomial written twice). The default copies each run of consecutive moves
    /// with one [`Backend::copy_words`]; a device backend may move them all in one launch.
    fn copy_polys_at(
        &self,
        src: &Self::Buffer,
        dst: &mut Self::Buffer,
        poly: usize,
        moves: &[[u32; 2]],
    ) -> Result<(), BackendError> {
        copy_polys_in_runs(self, src, dst, poly, moves)
    }

    /// Whether [`Backend::decompose_mac_twin`] at degree `n` takes the own-limb digit rows from
    /// the twin instead of transforming them (the work counters then count the transforms it
    /// skips).
    fn takes_twin(&self, n: usize) -> bool {
        let _ = n;
        false
    }

    /// One level of oblivious expansion (SealPIR's split), on `count` ciphertexts of `limbs`
    /// limbs, coefficient form, at polynomials `[at, at + count)` of `src = [c0s, c1s]`:
    /// with `t = tau(c)` key-switched (`tau` the signed gather `idx`, applied to both halves;
    /// `t1`'s digits times `keys` as in [`Backend::decompose_mac`], back from the NTT domain),
    /// writes `c + t` at polynomials `at + i` and `X^shift (c - t)` at `at + odd + i` of
    /// `dst = [c0s, c1s]` (`count <= odd`, `shift < 2N`). The default composes the other
    /// operations (with temporaries of `count` ciphertexts); a backend may fuse them so that a
    /// ciphertext is read once and its two children written once.
    #[allow(clippy::too_many_arguments)]
    fn expand_step(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        src: [&Self::Buffer; 2],
        dst: [&mut Self::Buffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        (digit_bits, digits): (u32, usize),
        keys: [&Self::Buffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        composed_expand_step(
            self,
            ring,
            ctx,
            src,
            dst,
            (at, count, odd),
            limbs,
            idx,
            (digit_bits, digits),
            keys,
            shift,
        )
    }

    /// Hybrid key switching, the ring's limb `limbs` being the special prime `P`: for each of
    /// the `polys` coefficient-form polynomials of `a` (`limbs` limbs), with `D_i` its residue
    /// in limb `i` lifted to every limb of `q P`,
    /// `out[k] = round((sum_i NTT(D_i) keys[k][i]) / P)`, back in coefficient form over the
    /// `limbs` limbs of `q` (the division rounds as [`Backend::mod_switch_down`] does). Each key
    /// holds `limbs + 1` polynomials of `limbs + 1` limbs, NTT form; the last meets the zero
    /// digit of `P`'s residue. The default composes [`Backend::decompose_mac`] over `q P`, the
    /// inverse transform and the modulus switch; a backend may fuse them.
    #[allow(clippy::too_many_arguments)]
    fn keyswitch_hybrid(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        a: &Self::Buffer,
        (polys, limbs): (usize, usize),
        keys: [&Self::Buffer; 2],
        out: [&mut Self::Buffer; 2],
    ) -> Result<(), BackendError> {
        composed_keyswitch_hybrid(self, ring, ctx, a, (polys, limbs), keys, out)
    }

    /// [`Backend::expand_step`] with the key switch of [`Backend::keyswitch_hybrid`]. The
    /// default composes the other operations.
    #[allow(clippy::too_many_arguments)]
    fn expand_step_hybrid(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        src: [&Self::Buffer; 2],
        dst: [&mut Self::Buffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        keys: [&Self::Buffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        composed_expand_step_hybrid(self, ring, ctx, src, dst, (at, count, odd), limbs, idx, keys, shift)
    }

    /// One level of PackLWEs with the key switch of [`Backend::keyswitch_hybrid`], on `count`
    /// pairs of ciphertexts of `limbs` limbs, coefficient form: with `A = src[a_at + i]`,
    /// `B = src[b_at + i]` and `tau` the signed gather `idx`, writes
    /// `(A + X^shift B) + tau(A - X^shift B)`, the automorphism key-switched, at
    /// `dst[out_at + i]` (`shift < 2N`; `dst` may not be `src`). The default composes the other
    /// operations (with temporaries of `count` ciphertexts); a backend may fuse them so that
    /// each pair is read once and its result written once.
    #[allow(clippy::too_many_arguments)]
    fn pack_step_hybrid(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        src: [&Self::Buffer; 2],
        dst: [&mut Self::Buffer; 2],
        (a_at, b_at, out_at, count): (usize, usize, usize, usize),
        limbs: usize,
        idx: &[u32],
        keys: [&Self::Buffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        composed_pack_step_hybrid(
            self,
            ring,
            ctx,
            src,
            dst,
            (a_at, b_at, out_at, count),
            limbs,
            idx,
            keys,
            shift,
        )
    }

    /// [`Backend::keyswitch_hybrid`] with the products left in the NTT domain: `out[k]` is the
    /// transform of what [`Backend::keyswitch_hybrid`] writes (the same words), given also
    /// `twin`, the NTT form of `a` (same shape; digit `l` reduced into limb `l` is its row
    /// `l`). The division by `P` is linear, so a backend may do it in the NTT domain: only
    /// `P`'s two rows go back, and the centred remainders come forward into each limb
    /// ([`Backend::fuses_hybrid_ntt`]). The default composes [`Backend::keyswitch_hybrid`] and
    /// the forward transform, ignoring `twin`.
    #[allow(clippy::too_many_arguments)]
    fn keyswitch_hybrid_ntt(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        a: &Self::Buffer,
        twin: &Self::Buffer,
        (polys, limbs): (usize, usize),
        keys: [&Self::Buffer; 2],
        out: [&mut Self::Buffer; 2],
    ) -> Result<(), BackendError> {
        let _ = twin;
        let [o0, o1] = out;
        self.keyswitch_hybrid(ring, ctx, a, (polys, limbs), keys, [&mut *o0, &mut *o1])?;
        self.ntt_forward(ring, o0, Shape::new(polys, limbs))?;
        self.ntt_forward(ring, o1, Shape::new(polys, limbs))
    }

    /// [`Backend::expand_step_hybrid`] in the NTT domain: `src` and `dst` hold NTT-form
    /// ciphertexts, and the children written are the transforms of those
    /// [`Backend::expand_step_hybrid`] writes for the inverse transforms of the sources (the
    /// same words). `idx` is the automorphism's signed gather in coefficient form (for the
    /// digits of `tau(c1)`), `idx_ntt` the same automorphism's permutation of NTT evaluations.
    /// A fused backend transforms `c1` back for its digits and nothing else: `tau` is a
    /// permutation, `X^shift` a pointwise product and the division by `P` linear in the NTT
    /// domain, so the children need no transform (the next level, the first dimension's
    /// product and the RGSW operands all take NTT form). The default composes the
    /// coefficient-form step between inverse and forward transforms.
    #[allow(clippy::too_many_arguments)]
    fn expand_step_hybrid_ntt(
        &self,
        ring: &Self::Ring,
        ctx: &RingContext,
        src: [&Self::Buffer; 2],
        dst: [&mut Self::Buffer; 2],
        (at, count, odd): (usize, usize, usize),
        limbs: usize,
        [idx, idx_ntt]: [&[u32]; 2],
        keys: [&Self::Buffer; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        let _ = idx_ntt;
        composed_expand_step_hybrid_ntt(self, ring, ctx, src, dst, (at, count, odd), limbs, idx, keys, shift)
    }

    /// Whether [`Backend::keyswitch_hybrid_ntt`] and [`Backend::expand_step_hybrid_ntt`] are
    /// fused as their notes describe (the work counters then count the transforms they do:
    /// the twin's digit rows copied, two inverse transforms of `P`'s rows and `2 limbs`
    /// forward ones of the remainders per key switch, one inverse of `c1` per expanded
    /// ciphertext) rather than composed.
    fn fuses_hybrid_ntt(&self) -> bool {
        false
    }

    /// The server's hot loop, a matrix product whose entries multiply pointwise:
    /// `out[r][c] (+)= sum_i a[r][i] * b[i][c]` over `limbs` limbs, where `a` holds
    /// `rows * inner` polynomials, `b` holds `inner * cols` and `out` holds `rows * cols`,
    /// all row-major. With `accumulate = false`, `out` is overwritten.
    #[allow(clippy::too_many_arguments)]
    fn mac(
        &self,
        ring: &Self::Ring,
        out: &mut Self::Buffer,
        a: &Self::Buffer,
        b: &Self::Buffer,
        dims: MacDims,
        limbs: usize,
        accumulate: bool,
    ) -> Result<(), BackendError>;

    /// `outs[k] (+)= a * keys[k]` coefficient-wise for `k = 0, 1`: every polynomial of `a`
    /// (`shape`, NTT form) times one key polynomial of `shape.limbs` limbs, into the output of
    /// `a`'s shape (overwritten with `accumulate = false`). The public key's two halves times
    /// each output's `u` in the finish's encryptions of zero. The default is two
    /// [`Backend::mac`]s of `shape.polys x 1` by `1 x 1`.
    #[allow(clippy::too_many_arguments)]
    fn mul_broadcast_pair(
        &self,
        ring: &Self::Ring,
        a: &Self::Buffer,
        keys: [&Self::Buffer; 2],
        outs: [&mut Self::Buffer; 2],
        shape: Shape,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let dims = MacDims { rows: shape.polys, inner: 1, cols: 1 };
        for (out, key) in outs.into_iter().zip(keys) {
            self.mac(ring, out, a, key, dims, shape.limbs, accumulate)?;
        }
        Ok(())
    }

    /// The right operand of [`Backend::mac`] (`inner * cols` NTT-form polynomials of `limbs`
    /// limbs, row-major) moved into the layout the backend multiplies fastest, for an operand
    /// that meets many products (a preprocessed table): [`Backend::mac_laid_out`] takes the
    /// result. It holds as many words as `b`. The default keeps `b` as it is.
    fn mac_layout(
        &self,
        ring: &Self::Ring,
        b: Self::Buffer,
        inner: usize,
        cols: usize,
        limbs: usize,
    ) -> Result<Self::Buffer, BackendError> {
        let _ = (ring, inner, cols, limbs);
        Ok(b)
    }

    /// Moves polynomials `[first, first + count)` of a right operand (`inner * cols`
    /// polynomials, row-major; `part` holds those `count`, NTT form, `limbs` limbs) to where
    /// [`Backend::mac_layout`] puts them in `dst`, a buffer of the whole operand's words: an
    /// operand laid out part by part equals the one laid out whole
    /// ([`Ring::mac_operand_from_parts`], which checked the ranges). The default (the
    /// row-major layout of the default `mac_layout`) copies.
    #[allow(clippy::too_many_arguments)]
    fn mac_layout_part(
        &self,
        ring: &Self::Ring,
        dst: &mut Self::Buffer,
        part: &Self::Buffer,
        (first, count): (usize, usize),
        (inner, cols, limbs, n): (usize, usize, usize, usize),
    ) -> Result<(), BackendError> {
        let _ = (ring, inner, cols);
        let poly = limbs * n;
        self.copy_words(part, 0, dst, first * poly, count * poly)
    }

    /// [`Backend::mac`] with `b` from [`Backend::mac_layout`] (of the same `inner`, `cols` and
    /// `limbs`), bit-identical to `mac` on the operand before its move. The default is `mac`
    /// (the default layout is the row-major one).
    #[allow(clippy::too_many_arguments)]
    fn mac_laid_out(
        &self,
        ring: &Self::Ring,
        out: &mut Self::Buffer,
        a: &Self::Buffer,
        b: &Self::Buffer,
        dims: MacDims,
        limbs: usize,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        self.mac(ring, out, a, b, dims, limbs, accumulate)
    }
}

/// The words of a [`Backend::difference`] of `shape` at degree `n` on a ring of degree
/// `ring_n`, after checking that both ranges lie inside a source of `len` words: what a
/// backend's own kernel checks before it reads the ranges where they lie ([`Ring::difference`]
/// has checked them by polynomial already, and passes offsets of whole polynomials, which the
/// kernels' limb of a word relies on).
pub fn difference_words(
    len: usize,
    (minuend, subtrahend): (usize, usize),
    shape: Shape,
    (n, ring_n): (usize, usize),
) -> Result<usize, BackendError> {
    let words = shape.words(n);
    let fits = |at: usize| at.checked_add(words).is_some_and(|end| end <= len);
    if n != ring_n || !fits(minuend) || !fits(subtrahend) {
        return Err(BackendError::Shape(format!(
            "a difference of {words} words at {minuend} and {subtrahend} of {len} (degree {n}, ring {ring_n})"
        )));
    }
    Ok(words)
}

/// [`Backend::decompose_mac`] from its steps (decompose, forward, two [`Backend::mac`] calls),
/// the digits materialised: the trait's default, and the fallback of a backend whose fused
/// kernel does not cover a size.
#[allow(clippy::too_many_arguments)]
pub fn composed_decompose_mac<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    a: &B::Buffer,
    (polys, limbs): (usize, usize),
    (digit_bits, digits): (u32, usize),
    keys: [&B::Buffer; 2],
    out: [&mut B::Buffer; 2],
    accumulate: bool,
) -> Result<(), BackendError> {
    let g = limbs * digits;
    let mut d = b.alloc_zeroed(polys * g * limbs * ctx.n())?;
    b.decompose(ring, ctx, a, polys, limbs, digit_bits, digits, &mut d)?;
    b.ntt_forward(ring, &mut d, Shape::new(polys * g, limbs))?;
    let dims = MacDims { rows: polys, inner: g, cols: 1 };
    let [o0, o1] = out;
    b.mac(ring, o0, &d, keys[0], dims, limbs, accumulate)?;
    b.mac(ring, o1, &d, keys[1], dims, limbs, accumulate)
}

/// [`Backend::copy_polys_at`] with one [`Backend::copy_words`] per run of consecutive moves
/// (a polynomial and the next going to a polynomial and the next): the trait's default, and a
/// backend's fallback.
pub fn copy_polys_in_runs<B: Backend + ?Sized>(
    b: &B,
    src: &B::Buffer,
    dst: &mut B::Buffer,
    poly: usize,
    moves: &[[u32; 2]],
) -> Result<(), BackendError> {
    let mut i = 0;
    while i < moves.len() {
        let [from, to] = moves[i];
        let run = 1 + moves[i + 1..]
            .iter()
            .zip(1u32..)
            .take_while(|&(m, k)| *m == [from.wrapping_add(k), to.wrapping_add(k)])
            .count();
        b.copy_words(src, from as usize * poly, dst, to as usize * poly, run * poly)?;
        i += run;
    }
    Ok(())
}

/// [`Backend::decompose_mac_sets`] one set at a time: the set's polynomials (`r % sets`) of
/// `a`, the twin and (accumulating) the outputs gathered, the set's keys copied out,
/// [`Backend::decompose_mac`] or [`Backend::decompose_mac_twin`], the outputs moved back. One
/// set is the plain call. The trait's default, and a backend's fallback.
#[allow(clippy::too_many_arguments)]
pub fn composed_decompose_mac_sets<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    a: &B::Buffer,
    twin: Option<&B::Buffer>,
    (polys, limbs): (usize, usize),
    (digit_bits, digits): (u32, usize),
    keys: [&B::Buffer; 2],
    out: [&mut B::Buffer; 2],
    (accumulate, sets): (bool, usize),
) -> Result<(), BackendError> {
    let product = |a: &B::Buffer,
                   twin: Option<&B::Buffer>,
                   count: usize,
                   keys: [&B::Buffer; 2],
                   out: [&mut B::Buffer; 2]| match twin {
        Some(t) => b.decompose_mac_twin(ring, ctx, a, t, (count, limbs), digit_bits, keys, out, accumulate),
        None => b.decompose_mac(ring, ctx, a, (count, limbs), (digit_bits, digits), keys, out, accumulate),
    };
    if sets <= 1 {
        return product(a, twin, polys, keys, out);
    }
    let (poly, count) = (limbs * ctx.n(), polys / sets);
    let key_words = limbs * digits * poly;
    let [o0, o1] = out;
    for set in 0..sets {
        // Polynomial `set + sets i` of the batch is polynomial `i` of the set's own.
        let moves: Vec<[u32; 2]> = (0..count).map(|i| [(set + sets * i) as u32, i as u32]).collect();
        let back: Vec<[u32; 2]> = moves.iter().map(|&[from, to]| [to, from]).collect();
        let gather = |src: &B::Buffer| -> Result<B::Buffer, BackendError> {
            let mut part = b.alloc_zeroed(count * poly)?;
            b.copy_polys_at(src, &mut part, poly, &moves)?;
            Ok(part)
        };
        let key = |k: &B::Buffer| -> Result<B::Buffer, BackendError> {
            let mut part = b.alloc_zeroed(key_words)?;
            b.copy_words(k, set * key_words, &mut part, 0, key_words)?;
            Ok(part)
        };
        let (part, part_twin) = (gather(a)?, twin.map(gather).transpose()?);
        let mut outs = if accumulate {
            [gather(o0)?, gather(o1)?]
        } else {
            [b.alloc_zeroed(count * poly)?, b.alloc_zeroed(count * poly)?]
        };
        let part_keys = [key(keys[0])?, key(keys[1])?];
        {
            let [p0, p1] = &mut outs;
            product(&part, part_twin.as_ref(), count, [&part_keys[0], &part_keys[1]], [p0, p1])?;
        }
        b.copy_polys_at(&outs[0], o0, poly, &back)?;
        b.copy_polys_at(&outs[1], o1, poly, &back)?;
    }
    Ok(())
}

/// Digit width of hybrid key switching: a residue below `2^31` is one digit.
pub const HYBRID_DIGIT_BITS: u32 = 31;

/// [`Backend::keyswitch_hybrid`] from its steps: the polynomials lifted to `q P` (a zero `P`
/// residue), [`Backend::decompose_mac`] with one digit per limb, the inverse transform and the
/// modulus switch down to `q`.
pub fn composed_keyswitch_hybrid<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    a: &B::Buffer,
    (polys, limbs): (usize, usize),
    keys: [&B::Buffer; 2],
    out: [&mut B::Buffer; 2],
) -> Result<(), BackendError> {
    let (n, wide) = (ctx.n(), limbs + 1);
    let mut lifted = b.alloc_zeroed(polys * wide * n)?;
    for p in 0..polys {
        b.copy_words(a, p * limbs * n, &mut lifted, p * wide * n, limbs * n)?;
    }
    let mut prod = [b.alloc_zeroed(polys * wide * n)?, b.alloc_zeroed(polys * wide * n)?];
    {
        let [p0, p1] = &mut prod;
        b.decompose_mac(ring, ctx, &lifted, (polys, wide), (HYBRID_DIGIT_BITS, 1), keys, [p0, p1], false)?;
    }
    for (p, o) in prod.iter_mut().zip(out) {
        b.ntt_inverse(ring, p, Shape::new(polys, wide))?;
        b.mod_switch_down(ring, p, polys, wide, o, limbs)?;
    }
    Ok(())
}

/// [`Backend::expand_step`] from the other operations (with temporaries of `count`
/// ciphertexts): the trait's default, and the fallback of a backend whose fused kernels do not
/// cover a size.
#[allow(clippy::too_many_arguments)]
pub fn composed_expand_step<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    src: [&B::Buffer; 2],
    dst: [&mut B::Buffer; 2],
    (at, count, odd): (usize, usize, usize),
    limbs: usize,
    idx: &[u32],
    (digit_bits, digits): (u32, usize),
    keys: [&B::Buffer; 2],
    shift: usize,
) -> Result<(), BackendError> {
    composed_expand_with(b, ring, ctx, src, dst, (at, count, odd), limbs, idx, shift, |t1, out| {
        gadget_keyswitch(b, ring, ctx, t1, (count, limbs), (digit_bits, digits), keys, out)
    })
}

/// The gadget key switch of [`Backend::expand_step`], coefficient form in and out:
/// [`Backend::decompose_mac`] of the `count` polynomials `t1` (`limbs` limbs) into `out`, then
/// both halves back from the NTT domain. Any backend's expansion step may wrap it.
#[allow(clippy::too_many_arguments)]
pub fn gadget_keyswitch<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    t1: &B::Buffer,
    (count, limbs): (usize, usize),
    (digit_bits, digits): (u32, usize),
    keys: [&B::Buffer; 2],
    [k0, k1]: [&mut B::Buffer; 2],
) -> Result<(), BackendError> {
    b.decompose_mac(ring, ctx, t1, (count, limbs), (digit_bits, digits), keys, [&mut *k0, &mut *k1], false)?;
    b.ntt_inverse(ring, k0, Shape::new(count, limbs))?;
    b.ntt_inverse(ring, k1, Shape::new(count, limbs))
}

/// [`Backend::expand_step_hybrid`] from the other operations, the key switch being the
/// backend's [`Backend::keyswitch_hybrid`]: the trait's default, and a backend's fallback.
#[allow(clippy::too_many_arguments)]
pub fn composed_expand_step_hybrid<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    src: [&B::Buffer; 2],
    dst: [&mut B::Buffer; 2],
    (at, count, odd): (usize, usize, usize),
    limbs: usize,
    idx: &[u32],
    keys: [&B::Buffer; 2],
    shift: usize,
) -> Result<(), BackendError> {
    composed_expand_with(b, ring, ctx, src, dst, (at, count, odd), limbs, idx, shift, |t1, out| {
        b.keyswitch_hybrid(ring, ctx, t1, (count, limbs), keys, out)
    })
}

/// [`Backend::expand_step_hybrid_ntt`] from the coefficient-form step: the sources'
/// `count` ciphertexts copied and transformed back, [`Backend::expand_step_hybrid`] into a
/// temporary of both children, which is transformed and copied to its two ranges of `dst`.
/// The trait's default, and a backend's fallback.
#[allow(clippy::too_many_arguments)]
pub fn composed_expand_step_hybrid_ntt<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    src: [&B::Buffer; 2],
    dst: [&mut B::Buffer; 2],
    (at, count, odd): (usize, usize, usize),
    limbs: usize,
    idx: &[u32],
    keys: [&B::Buffer; 2],
    shift: usize,
) -> Result<(), BackendError> {
    let poly = limbs * ctx.n();
    let words = count * poly;
    let mut c = [b.alloc_zeroed(words)?, b.alloc_zeroed(words)?];
    for (k, c) in c.iter_mut().enumerate() {
        b.copy_words(src[k], at * poly, c, 0, words)?;
        b.ntt_inverse(ring, c, Shape::new(count, limbs))?;
    }
    let mut children = [b.alloc_zeroed(2 * words)?, b.alloc_zeroed(2 * words)?];
    {
        let [d0, d1] = &mut children;
        b.expand_step_hybrid(
            ring,
            ctx,
            [&c[0], &c[1]],
            [d0, d1],
            (0, count, count),
            limbs,
            idx,
            keys,
            shift,
        )?;
    }
    for (d, out) in children.iter_mut().zip(dst) {
        b.ntt_forward(ring, d, Shape::new(2 * count, limbs))?;
        b.copy_words(d, 0, out, at * poly, words)?;
        b.copy_words(d, words, out, (at + odd) * poly, words)?;
    }
    Ok(())
}

/// [`Backend::pack_step_hybrid`] from the other operations: `X^shift B`, the sum and the
/// difference with `A`, the difference's automorphism and its key switch, then the sum plus
/// both. The trait's default, and a backend's fallback.
#[allow(clippy::too_many_arguments)]
pub fn composed_pack_step_hybrid<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    src: [&B::Buffer; 2],
    dst: [&mut B::Buffer; 2],
    (a_at, b_at, out_at, count): (usize, usize, usize, usize),
    limbs: usize,
    idx: &[u32],
    keys: [&B::Buffer; 2],
    shift: usize,
) -> Result<(), BackendError> {
    let poly = limbs * ctx.n();
    let (shape, words) = (Shape::new(count, limbs), count * poly);
    let mut sum = [b.alloc_zeroed(words)?, b.alloc_zeroed(words)?];
    let mut tau = [b.alloc_zeroed(words)?, b.alloc_zeroed(words)?];
    for k in 0..2 {
        let mut xb = b.alloc_zeroed(words)?;
        b.copy_words(src[k], b_at * poly, &mut xb, 0, words)?;
        b.monomial_mul_assign(ring, &mut xb, shift, shape)?;
        let mut diff = b.alloc_zeroed(words)?;
        b.copy_words(src[k], a_at * poly, &mut diff, 0, words)?;
        b.copy_words(src[k], a_at * poly, &mut sum[k], 0, words)?;
        b.add_assign(ring, &mut sum[k], &xb, shape)?;
        b.sub_assign(ring, &mut diff, &xb, shape)?;
        b.gather_signed(ring, ctx, &mut tau[k], &diff, idx, shape)?;
    }
    let mut ks = [b.alloc_zeroed(words)?, b.alloc_zeroed(words)?];
    {
        let [k0, k1] = &mut ks;
        b.keyswitch_hybrid(ring, ctx, &tau[1], (count, limbs), keys, [k0, k1])?;
    }
    // (sum0 + tau(diff0) + b, sum1 + a).
    b.add_assign(ring, &mut sum[0], &tau[0], shape)?;
    for (k, out) in dst.into_iter().enumerate() {
        b.add_assign(ring, &mut sum[k], &ks[k], shape)?;
        b.copy_words(&sum[k], 0, out, out_at * poly, words)?;
    }
    Ok(())
}

/// One expansion level from its steps, with the key switch `switch(t1, [b, a])` that writes
/// the coefficient-form key products of the gathered `t1`.
#[allow(clippy::too_many_arguments)]
fn composed_expand_with<B: Backend + ?Sized>(
    b: &B,
    ring: &B::Ring,
    ctx: &RingContext,
    src: [&B::Buffer; 2],
    dst: [&mut B::Buffer; 2],
    (at, count, odd): (usize, usize, usize),
    limbs: usize,
    idx: &[u32],
    shift: usize,
    switch: impl FnOnce(&B::Buffer, [&mut B::Buffer; 2]) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let poly = limbs * ctx.n();
    let (shape, words) = (Shape::new(count, limbs), count * poly);
    let mut c = [b.alloc_zeroed(words)?, b.alloc_zeroed(words)?];
    let mut t = [b.alloc_zeroed(words)?, b.alloc_zeroed(words)?];
    for k in 0..2 {
        b.copy_words(src[k], at * poly, &mut c[k], 0, words)?;
        b.gather_signed(ring, ctx, &mut t[k], &c[k], idx, shape)?;
    }
    let mut ks = [b.alloc_zeroed(words)?, b.alloc_zeroed(words)?];
    {
        let [k0, k1] = &mut ks;
        switch(&t[1], [k0, k1])?;
    }
    // t = (tau(c0) + b, a).
    b.add_assign(ring, &mut t[0], &ks[0], shape)?;
    let [_, a] = ks;
    t[1] = a;
    for (k, out) in dst.into_iter().enumerate() {
        let mut even = b.duplicate(&c[k])?;
        b.add_assign(ring, &mut even, &t[k], shape)?;
        b.sub_assign(ring, &mut c[k], &t[k], shape)?;
        b.monomial_mul_assign(ring, &mut c[k], shift, shape)?;
        b.copy_words(&even, 0, out, at * poly, words)?;
        b.copy_words(&c[k], 0, out, (at + odd) * poly, words)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Shape, difference_words};

    /// Ranges inside the source give the words; a range past the end, an overflowing offset,
    /// or another degree than the ring's is an error, never a panic.
    #[test]
    fn difference_ranges_are_checked() {
        let (n, shape) = (16, Shape::new(2, 3));
        let words = shape.words(n);
        let len = 3 * words;
        assert_eq!(difference_words(len, (words, 0), shape, (n, n)).unwrap(), words);
        assert_eq!(difference_words(len, (2 * words, 2 * words), shape, (n, n)).unwrap(), words);
        assert!(difference_words(len, (2 * words + 1, 0), shape, (n, n)).is_err());
        assert!(difference_words(len, (0, 2 * words + 1), shape, (n, n)).is_err());
        assert!(difference_words(len, (usize::MAX, 0), shape, (n, n)).is_err());
        assert!(difference_words(len, (0, 0), shape, (n, 2 * n)).is_err());
        let empty = Shape::new(0, 3);
        assert_eq!(difference_words(len, (len, len), empty, (n, n)).unwrap(), 0);
    }
}
