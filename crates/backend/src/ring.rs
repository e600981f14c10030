use std::{
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use fastquery_math::{Modulus, RnsBasis};
use fastquery_ntt::NttTables;

use crate::{Backend, BackendError, Coeff, MacDims, MacOperand, Ntt, Polys, Repr, Shape};

/// The ring `Z_q[X]/(X^N + 1)`, `q = p_0 * ... * p_{L-1}`, with each prime's NTT tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingContext {
    n: usize,
    basis: RnsBasis,
    tables: Vec<Arc<NttTables>>,
}

impl RingContext {
    /// Validates `n` and the primes (distinct NTT-friendly primes below `2^31`).
    pub fn new(n: usize, primes: &[u32]) -> Result<Self, BackendError> {
        let basis = RnsBasis::new(primes)?;
        let tables =
            primes.iter().map(|&p| NttTables::new(p, n).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { n, basis, tables })
    }

    /// The degree `N`.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The RNS basis.
    pub fn basis(&self) -> &RnsBasis {
        &self.basis
    }

    /// The moduli, limb order.
    pub fn moduli(&self) -> &[Modulus] {
        self.basis.moduli()
    }

    /// Number of limbs.
    pub fn limbs(&self) -> usize {
        self.basis.len()
    }

    /// NTT tables, limb order.
    pub fn tables(&self) -> &[Arc<NttTables>] {
        &self.tables
    }
}

static NEXT_RING_ID: AtomicU64 = AtomicU64::new(1);

/// A ring loaded on a backend: the typed, checked entry point to every polynomial operation.
pub struct Ring<B: Backend> {
    backend: Arc<B>,
    ctx: Arc<RingContext>,
    dev: B::Ring,
    id: u64,
}

impl<B: Backend> std::fmt::Debug for Ring<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("backend", &self.backend.info().name)
            .field("n", &self.ctx.n())
            .field("limbs", &self.ctx.limbs())
            .finish()
    }
}

impl<B: Backend> Ring<B> {
    /// Loads `ctx` on `backend`.
    pub fn new(backend: Arc<B>, ctx: Arc<RingContext>) -> Result<Self, BackendError> {
        let dev = backend.load_ring(&ctx)?;
        let id = NEXT_RING_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Self { backend, ctx, dev, id })
    }

    /// The host-side description.
    pub fn context(&self) -> &Arc<RingContext> {
        &self.ctx
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// The degree `N`.
    pub fn n(&self) -> usize {
        self.ctx.n()
    }

    fn check_shape(&self, shape: Shape) -> Result<(), BackendError> {
        if shape.limbs == 0 || shape.limbs > self.ctx.limbs() {
            return Err(BackendError::Shape(format!(
                "{} limbs requested, the ring has {}",
                shape.limbs,
                self.ctx.limbs()
            )));
        }
        shape
            .polys
            .checked_mul(shape.limbs)
            .and_then(|r| r.checked_mul(self.n()))
            .map(|_| ())
            .ok_or_else(|| BackendError::Shape("buffer size overflows".into()))
    }

    fn check_own<R: Repr>(&self, p: &Polys<B, R>) -> Result<(), BackendError> {
        if p.ring_id == self.id { Ok(()) } else { Err(BackendError::RingMismatch) }
    }

    fn check_pair<R: Repr>(&self, a: &Polys<B, R>, b: &Polys<B, R>) -> Result<(), BackendError> {
        self.check_own(a)?;
        self.check_own(b)?;
        if a.shape != b.shape {
            return Err(BackendError::Shape(format!("{:?} vs {:?}", a.shape, b.shape)));
        }
        Ok(())
    }

    fn wrap<R: Repr>(&self, buf: B::Buffer, shape: Shape) -> Polys<B, R> {
        Polys { buf, shape, ring_id: self.id, _repr: PhantomData }
    }

    /// `polys` zero polynomials with `limbs` limbs.
    pub fn zeros<R: Repr>(&self, shape: Shape) -> Result<Polys<B, R>, BackendError> {
        self.check_shape(shape)?;
        Ok(self.wrap(self.backend.alloc_zeroed(shape.words(self.n()))?, shape))
    }

    /// Uploads host words laid out `[poly][limb][coefficient]`; every word must be reduced.
    pub fn upload<R: Repr>(&self, words: &[u32], shape: Shape) -> Result<Polys<B, R>, BackendError> {
        self.check_upload(words, shape)?;
        Ok(self.wrap(self.backend.upload(words)?, shape))
    }

    /// [`Ring::upload`] of an owned vector, which a host backend keeps instead of copying
    /// ([`Backend::upload_vec`]); the same checks.
    pub fn upload_vec<R: Repr>(&self, words: Vec<u32>, shape: Shape) -> Result<Polys<B, R>, BackendError> {
        self.check_upload(&words, shape)?;
        Ok(self.wrap(self.backend.upload_vec(words)?, shape))
    }

    /// The checks of an upload: `words` has the shape's length, and every word is below its
    /// limb's modulus.
    fn check_upload(&self, words: &[u32], shape: Shape) -> Result<(), BackendError> {
        self.check_shape(shape)?;
        let n = self.n();
        if words.len() != shape.words(n) {
            return Err(BackendError::Shape(format!(
                "{} words for {} polys x {} limbs x {n}",
                words.len(),
                shape.polys,
                shape.limbs
            )));
        }
        let bad = |(row, chunk): (usize, &[u32])| {
            let p = self.ctx.moduli()[row % shape.limbs].value();
            chunk.iter().position(|&w| w >= p).map(|j| (row, j, chunk[j], p))
        };
        // Large uploads are checked on several threads (a query is megabytes of words).
        let found = if words.len() >= 1 << 20 {
            std::thread::scope(|s| {
                let parts = std::thread::available_parallelism().map_or(1, |c| c.get()).min(16);
                let rows_per = (words.len() / n).div_ceil(parts);
                let handles: Vec<_> = words
                    .chunks(rows_per * n)
                    .enumerate()
                    .map(|(k, part)| {
                        s.spawn(move || {
                            part.chunks_exact(n).enumerate().find_map(|(r, c)| bad((k * rows_per + r, c)))
                        })
                    })
                    .collect();
                handles.into_iter().find_map(|h| h.join().ok().flatten())
            })
        } else {
            words.chunks_exact(n).enumerate().find_map(bad)
        };
        if let Some((row, j, w, p)) = found {
            return Err(BackendError::InvalidInput(format!(
                "poly {} limb {} coefficient {j}: {w} is not below {p}",
                row / shape.limbs,
                row % shape.limbs
            )));
        }
        Ok(())
    }

    /// Downloads to the host, layout `[poly][limb][coefficient]`.
    pub fn download<R: Repr>(&self, p: &Polys<B, R>) -> Result<Vec<u32>, BackendError> {
        self.check_own(p)?;
        let mut out = vec![0u32; p.shape.words(self.n())];
        self.backend.download(&p.buf, &mut out)?;
        Ok(out)
    }

    /// A device-side copy.
    pub fn duplicate<R: Repr>(&self, p: &Polys<B, R>) -> Result<Polys<B, R>, BackendError> {
        self.check_own(p)?;
        Ok(self.wrap(self.backend.duplicate(&p.buf)?, p.shape))
    }

    /// Copies `count` polynomials from `src` (starting at polynomial `src_first`) into `dst`
    /// (starting at `dst_first`), on the device. Both must have the same limbs.
    pub fn copy_polys<R: Repr>(
        &self,
        src: &Polys<B, R>,
        src_first: usize,
        dst: &mut Polys<B, R>,
        dst_first: usize,
        count: usize,
    ) -> Result<(), BackendError> {
        self.check_own(src)?;
        self.check_own(dst)?;
        let fits = |first: usize, polys: usize| first.checked_add(count).is_some_and(|end| end <= polys);
        if src.shape.limbs != dst.shape.limbs
            || !fits(src_first, src.shape.polys)
            || !fits(dst_first, dst.shape.polys)
        {
            return Err(BackendError::Shape(format!(
                "copy of {count} polys from {src_first} of {:?} to {dst_first} of {:?}",
                src.shape, dst.shape
            )));
        }
        let poly = src.shape.limbs * self.n();
        if count == 0 {
            return Ok(());
        }
        self.backend.copy_words(&src.buf, src_first * poly, &mut dst.buf, dst_first * poly, count * poly)
    }

    /// Forward NTT of every polynomial, in place on the device.
    pub fn forward(&self, mut p: Polys<B, Coeff>) -> Result<Polys<B, Ntt>, BackendError> {
        self.check_own(&p)?;
        self.backend.ntt_forward(&self.dev, &mut p.buf, p.shape)?;
        crate::work::transforms(p.shape.polys * p.shape.limbs);
        Ok(self.wrap(p.buf, p.shape))
    }

    /// Inverse NTT of every polynomial, in place on the device.
    pub fn inverse(&self, mut p: Polys<B, Ntt>) -> Result<Polys<B, Coeff>, BackendError> {
        self.check_own(&p)?;
        self.backend.ntt_inverse(&self.dev, &mut p.buf, p.shape)?;
        crate::work::transforms(p.shape.polys * p.shape.limbs);
        Ok(self.wrap(p.buf, p.shape))
    }

    /// The inverse NTT of a copy of `p`, which stays as it is (one pass where the backend copies
    /// each row in cache, instead of a copy of the whole batch and then its transform).
    pub fn inverse_of(&self, p: &Polys<B, Ntt>) -> Result<Polys<B, Coeff>, BackendError> {
        self.check_own(p)?;
        let buf = self.backend.ntt_inverse_copy(&self.dev, &p.buf, p.shape)?;
        crate::work::transforms(p.shape.polys * p.shape.limbs);
        Ok(self.wrap(buf, p.shape))
    }

    /// The first `count` polynomials of `p` (`count <= p`'s), in its allocation where the
    /// backend can keep it: no copy on the CPU.
    pub fn truncate<R: Repr>(&self, p: Polys<B, R>, count: usize) -> Result<Polys<B, R>, BackendError> {
        self.check_own(&p)?;
        if count > p.shape.polys {
            return Err(BackendError::Shape(format!(
                "{count} of the {} polys of {:?}",
                p.shape.polys, p.shape
            )));
        }
        let shape = Shape::new(count, p.shape.limbs);
        Ok(self.wrap(self.backend.truncate(p.buf, shape.words(self.n()))?, shape))
    }

    /// Moves whole polynomials: polynomial `from` of `src` to polynomial `to` of `dst` for each
    /// `(from, to)` of `moves` (same limbs; every index in range; no polynomial of `dst`
    /// written twice). One launch on a device backend, whatever the pattern: a transposition
    /// of a batch's rows, or the gathering of every token's rows of a bit.
    pub fn copy_polys_at<R: Repr>(
        &self,
        src: &Polys<B, R>,
        dst: &mut Polys<B, R>,
        moves: &[(usize, usize)],
    ) -> Result<(), BackendError> {
        self.check_own(src)?;
        self.check_own(dst)?;
        let fits = |i: usize, polys: usize| i < polys && u32::try_from(i).is_ok();
        let mut written = vec![false; if moves.is_empty() { 0 } else { dst.shape.polys }];
        for &(from, to) in moves {
            if src.shape.limbs != dst.shape.limbs
                || !fits(from, src.shape.polys)
                || !fits(to, dst.shape.polys)
                || std::mem::replace(&mut written[to], true)
            {
                return Err(BackendError::Shape(format!(
                    "moving poly {from} of {:?} to poly {to} of {:?} (each destination once)",
                    src.shape, dst.shape
                )));
            }
        }
        if moves.is_empty() {
            return Ok(());
        }
        let moves: Vec<[u32; 2]> = moves.iter().map(|&(f, t)| [f as u32, t as u32]).collect();
        let poly = src.shape.limbs * self.n();
        self.backend.copy_polys_at(&src.buf, &mut dst.buf, poly, &moves)
    }

    /// `p[minuend + i] - p[subtrahend + i]` for `i < count`, as a new batch: one pass over the
    /// two ranges (the difference of a CMux's halves without copying them out first).
    pub fn difference<R: Repr>(
        &self,
        p: &Polys<B, R>,
        minuend: usize,
        subtrahend: usize,
        count: usize,
    ) -> Result<Polys<B, R>, BackendError> {
        self.check_own(p)?;
        let fits = |first: usize| first.checked_add(count).is_some_and(|end| end <= p.shape.polys);
        if !fits(minuend) || !fits(subtrahend) {
            return Err(BackendError::Shape(format!(
                "a difference of {count} polys at {minuend} and {subtrahend} of {:?}",
                p.shape
            )));
        }
        let (shape, poly) = (Shape::new(count, p.shape.limbs), p.shape.limbs * self.n());
        let buf = self.backend.difference(
            &self.dev,
            &p.buf,
            (minuend * poly, subtrahend * poly),
            shape,
            self.n(),
        )?;
        Ok(self.wrap(buf, shape))
    }

    /// `a += b`.
    pub fn add_assign<R: Repr>(&self, a: &mut Polys<B, R>, b: &Polys<B, R>) -> Result<(), BackendError> {
        self.check_pair(a, b)?;
        self.backend.add_assign(&self.dev, &mut a.buf, &b.buf, a.shape)
    }

    /// `a -= b`.
    pub fn sub_assign<R: Repr>(&self, a: &mut Polys<B, R>, b: &Polys<B, R>) -> Result<(), BackendError> {
        self.check_pair(a, b)?;
        self.backend.sub_assign(&self.dev, &mut a.buf, &b.buf, a.shape)
    }

    /// `a = -a`.
    pub fn neg_assign<R: Repr>(&self, a: &mut Polys<B, R>) -> Result<(), BackendError> {
        self.check_own(a)?;
        self.backend.neg_assign(&self.dev, &mut a.buf, a.shape)
    }

    /// `a *= c` for an integer `c` (reduced per limb).
    pub fn scalar_mul_assign<R: Repr>(&self, a: &mut Polys<B, R>, c: u64) -> Result<(), BackendError> {
        let residues: Vec<u32> = self.ctx.moduli()[..a.shape.limbs].iter().map(|m| m.reduce_u64(c)).collect();
        self.scalar_mul_assign_rns(a, &residues)
    }

    /// `a *= c` for `c` given by one reduced residue per limb of `a`.
    pub fn scalar_mul_assign_rns<R: Repr>(
        &self,
        a: &mut Polys<B, R>,
        residues: &[u32],
    ) -> Result<(), BackendError> {
        self.check_own(a)?;
        if residues.len() != a.shape.limbs {
            return Err(BackendError::Shape(format!(
                "{} residues for {} limbs",
                residues.len(),
                a.shape.limbs
            )));
        }
        for (&r, m) in residues.iter().zip(self.ctx.moduli()) {
            if r >= m.value() {
                return Err(BackendError::InvalidInput(format!("residue {r} is not below {}", m.value())));
            }
        }
        self.backend.scalar_mul_assign(&self.dev, &mut a.buf, residues, a.shape)
    }

    /// `a *= b` pointwise in the NTT domain (negacyclic product).
    pub fn mul_assign(&self, a: &mut Polys<B, Ntt>, b: &Polys<B, Ntt>) -> Result<(), BackendError> {
        self.check_pair(a, b)?;
        self.backend.mul_assign(&self.dev, &mut a.buf, &b.buf, a.shape)
    }

    /// `a *= X^k`, `0 <= k < 2N` (`X^N = -1`).
    pub fn monomial_mul_assign(&self, a: &mut Polys<B, Coeff>, k: usize) -> Result<(), BackendError> {
        self.check_own(a)?;
        if k >= 2 * self.n() {
            return Err(BackendError::InvalidInput(format!(
                "monomial degree {k} is not below 2N = {}",
                2 * self.n()
            )));
        }
        self.backend.monomial_mul_assign(&self.dev, &mut a.buf, k, a.shape)
    }

    /// Modulus switching: `round(a * q' / q)` where `q'` is the product of the first `limbs`
    /// primes of `a` and `q` of all of them; coefficient form, a new buffer.
    pub fn mod_switch_down(
        &self,
        a: &Polys<B, Coeff>,
        limbs: usize,
    ) -> Result<Polys<B, Coeff>, BackendError> {
        self.check_own(a)?;
        if limbs == 0 || limbs >= a.shape.limbs {
            return Err(BackendError::Shape(format!(
                "modulus switch from {} limbs to {limbs}: the target must keep at least one and drop at least one",
                a.shape.limbs
            )));
        }
        let shape = Shape::new(a.shape.polys, limbs);
        let mut out = self.zeros::<Coeff>(shape)?;
        self.backend.mod_switch_down(&self.dev, &a.buf, a.shape.polys, a.shape.limbs, &mut out.buf, limbs)?;
        Ok(out)
    }

    /// The Galois automorphism `X -> X^g` (odd `g`) of every polynomial, in either form; a new
    /// buffer.
    pub fn automorphism<R: Repr>(&self, a: &Polys<B, R>, g: usize) -> Result<Polys<B, R>, BackendError> {
        self.check_own(a)?;
        let idx = self.gather_of(g, R::IS_NTT)?;
        let mut out = self.zeros::<R>(a.shape)?;
        self.backend.gather_signed(&self.dev, &self.ctx, &mut out.buf, &a.buf, &idx, a.shape)?;
        Ok(out)
    }

    /// [`Backend::keyswitch_chunk`] (at least 1).
    pub fn keyswitch_chunk(&self) -> usize {
        self.backend.keyswitch_chunk().max(1)
    }

    /// [`Backend::key_product_chunk`] at this ring's degree (at least 1).
    pub fn key_product_chunk(&self) -> usize {
        self.backend.key_product_chunk(self.n()).max(1)
    }

    /// Digits per limb of a decomposition of `limbs` limbs with `digit_bits`-bit digits.
    pub fn digits(&self, limbs: usize, digit_bits: u32) -> usize {
        let bits =
            self.ctx.moduli()[..limbs.min(self.ctx.limbs())].iter().map(|m| m.bits()).max().unwrap_or(1);
        bits.div_ceil(digit_bits.max(1)) as usize
    }

    /// The uniform polynomials of `seeds` (see [`Backend::expand_seeds`]): `polys` polynomials
    /// of `limbs` limbs per seed, seed after seed. Uniform in either representation, so the
    /// caller names it.
    pub fn expand_seeds<R: Repr>(
        &self,
        seeds: &[[u8; 32]],
        polys: usize,
        limbs: usize,
    ) -> Result<Polys<B, R>, BackendError> {
        if limbs == 0 || limbs > self.ctx.limbs() {
            return Err(BackendError::Shape(format!(
                "expand_seeds: {limbs} limbs on a ring of {}",
                self.ctx.limbs()
            )));
        }
        let total = seeds
            .len()
            .checked_mul(polys)
            .ok_or_else(|| BackendError::Shape("expand_seeds: size overflows".into()))?;
        let mut out = self.zeros::<R>(Shape::new(total, limbs))?;
        if total > 0 {
            self.backend.expand_seeds(&self.dev, &self.ctx, seeds, polys, limbs, &mut out.buf)?;
        }
        Ok(out)
    }

    /// [`Ring::expand_seeds`] of one polynomial per seed, written into `out` (see
    /// [`Backend::expand_seeds_into`]): groups of `group` seeds fill `group` consecutive
    /// polynomials from `first`, `stride` polynomials apart; the rest of `out` is left as it
    /// is. `out` has `limbs` limbs, and every group lands inside it.
    pub fn expand_seeds_into<R: Repr>(
        &self,
        seeds: &[[u8; 32]],
        out: &mut Polys<B, R>,
        (first, group, stride): (usize, usize, usize),
    ) -> Result<(), BackendError> {
        self.check_own(out)?;
        if seeds.is_empty() {
            return Ok(());
        }
        // The end of the last group (polynomials), where the layout is whole.
        let end = match seeds.len().checked_div(group) {
            Some(groups) if seeds.len().is_multiple_of(group) && (groups == 1 || stride >= group) => (groups
                - 1)
            .checked_mul(stride)
            .and_then(|x| x.checked_add(first))
            .and_then(|x| x.checked_add(group)),
            _ => None,
        };
        if end.is_none_or(|end| end > out.shape.polys) {
            return Err(BackendError::Shape(format!(
                "expand_seeds_into: {} seeds in groups of {group}, {stride} apart from {first}, into {:?}",
                seeds.len(),
                out.shape
            )));
        }
        let limbs = out.shape.limbs;
        self.backend.expand_seeds_into(
            &self.dev,
            &self.ctx,
            seeds,
            limbs,
            &mut out.buf,
            (first, group, stride),
        )
    }

    fn check_zero_noise(&self, limbs: usize, eta: u32) -> Result<(), BackendError> {
        if limbs == 0 || limbs > self.ctx.limbs() || eta == 0 || eta > 32 {
            return Err(BackendError::Shape(format!(
                "zero_noise: {limbs} limbs on a ring of {}, eta {eta} (1 to 32)",
                self.ctx.limbs()
            )));
        }
        Ok(())
    }

    /// The noise of `seeds.len()` public-key encryptions of zero (see [`Backend::zero_noise`]):
    /// `[u, e0, e1]`, each one polynomial of `limbs` limbs per seed, coefficient form.
    pub fn zero_noise(
        &self,
        seeds: &[[u8; 32]],
        limbs: usize,
        eta: u32,
    ) -> Result<[Polys<B, Coeff>; 3], BackendError> {
        self.check_zero_noise(limbs, eta)?;
        let shape = Shape::new(seeds.len(), limbs);
        let mut out = [self.zeros::<Coeff>(shape)?, self.zeros::<Coeff>(shape)?, self.zeros::<Coeff>(shape)?];
        if !seeds.is_empty() {
            let [u, e0, e1] = &mut out;
            self.backend.zero_noise(
                &self.dev,
                &self.ctx,
                seeds,
                limbs,
                eta,
                [&mut u.buf, &mut e0.buf, &mut e1.buf],
            )?;
        }
        Ok(out)
    }

    /// Adds a finish's flooding and masks ([`Backend::flood_mask_add`]) to `a`, one ciphertext
    /// per seed: ciphertext `ct` keeps the coefficients `positions[ct]` (each below `N`, none
    /// twice).
    pub fn flood_mask_add(
        &self,
        a: &mut Polys<B, Coeff>,
        spec: &crate::host::Flooding,
        seeds: &[[u8; 32]],
        positions: &[Vec<usize>],
    ) -> Result<(), BackendError> {
        let n = self.ctx.n();
        let limbs = a.shape.limbs;
        if a.shape.polys != seeds.len() || positions.len() != seeds.len() || spec.floor_res().len() < limbs {
            return Err(BackendError::Shape(format!(
                "flood_mask_add: {} ciphertexts, {} seeds, {} position lists, {} limbs of encoding for {limbs}",
                a.shape.polys,
                seeds.len(),
                positions.len(),
                spec.floor_res().len()
            )));
        }
        let mut seen = vec![false; n];
        let mut flat = Vec::with_capacity(positions.iter().map(Vec::len).sum());
        let mut starts = Vec::with_capacity(seeds.len() + 1);
        for pos in positions {
            starts.push(
                u32::try_from(flat.len())
                    .map_err(|_| BackendError::InvalidInput("flood_mask_add: too many positions".into()))?,
            );
            for &j in pos {
                if j >= n || std::mem::replace(&mut seen[j], true) {
                    return Err(BackendError::InvalidInput(format!(
                        "flood_mask_add: position {j} out of range or repeated (N = {n})"
                    )));
                }
                flat.push(j as u32);
            }
            pos.iter().for_each(|&j| seen[j] = false);
        }
        starts.push(
            u32::try_from(flat.len())
                .map_err(|_| BackendError::InvalidInput("flood_mask_add: too many positions".into()))?,
        );
        if flat.is_empty() {
            return Ok(());
        }
        self.backend.flood_mask_add(&self.dev, &self.ctx, &mut a.buf, limbs, spec, seeds, (&flat, &starts))
    }

    /// `[u, e1]` of [`Ring::zero_noise`] for the same seeds, word for word, without drawing
    /// `e0` into a buffer (see [`Backend::zero_noise_c1`]).
    pub fn zero_noise_c1(
        &self,
        seeds: &[[u8; 32]],
        limbs: usize,
        eta: u32,
    ) -> Result<[Polys<B, Coeff>; 2], BackendError> {
        self.check_zero_noise(limbs, eta)?;
        let shape = Shape::new(seeds.len(), limbs);
        let mut out = [self.zeros::<Coeff>(shape)?, self.zeros::<Coeff>(shape)?];
        if !seeds.is_empty() {
            let [u, e1] = &mut out;
            self.backend.zero_noise_c1(&self.dev, &self.ctx, seeds, limbs, eta, [&mut u.buf, &mut e1.buf])?;
        }
        Ok(out)
    }

    /// Words `idx[k]` of `a` (row-major, N words per row) on the host, in the order asked.
    pub fn gather_words<R: Repr>(&self, a: &Polys<B, R>, idx: &[u32]) -> Result<Vec<u32>, BackendError> {
        self.check_own(a)?;
        let words = a.shape.words(self.ctx.n());
        if let Some(&i) = idx.iter().find(|&&i| i as usize >= words) {
            return Err(BackendError::Shape(format!("gather_words: index {i} of a buffer of {words} words")));
        }
        let mut out = vec![0u32; idx.len()];
        if !idx.is_empty() {
            self.backend.gather_words(&a.buf, words, idx, &mut out)?;
        }
        Ok(out)
    }

    /// Gadget decomposition (see [`Backend::decompose`]): `a.polys * limbs * digits`
    /// coefficient-form polynomials of small integers, `digit_bits` in `1..=31`.
    pub fn decompose(&self, a: &Polys<B, Coeff>, digit_bits: u32) -> Result<Polys<B, Coeff>, BackendError> {
        self.check_own(a)?;
        check_digit_bits(digit_bits)?;
        let Shape { polys, limbs } = a.shape;
        let digits = self.digits(limbs, digit_bits);
        let shape = Shape::new(
            polys
                .checked_mul(limbs * digits)
                .ok_or_else(|| BackendError::Shape("decomposition size overflows".into()))?,
            limbs,
        );
        let mut out = self.zeros::<Coeff>(shape)?;
        self.backend.decompose(
            &self.dev,
            &self.ctx,
            &a.buf,
            polys,
            limbs,
            digit_bits,
            digits,
            &mut out.buf,
        )?;
        Ok(out)
    }

    /// `out[k][r] (+)= sum_e NTT(D_e(a[r])) * keys[k][e]` for `k = 0, 1` (see
    /// [`Backend::decompose_mac`]): the digits of `a` times two key operands of
    /// `limbs * digits` polynomials each; `out[k]` has `a`'s shape. Keys of `sets` such sets
    /// side by side (`sets` dividing `a`'s polynomials) give polynomial `r` set `r % sets`
    /// ([`Backend::decompose_mac_sets`]): one token's key each, tokens in turn.
    pub fn decompose_mac(
        &self,
        a: &Polys<B, Coeff>,
        digit_bits: u32,
        keys: [&Polys<B, Ntt>; 2],
        out: [&mut Polys<B, Ntt>; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        self.key_products(a, None, digit_bits, keys, out, accumulate)
    }

    /// [`Ring::decompose_mac`] with one digit per limb (`digit_bits` at least every prime's
    /// width), given also `a`'s NTT form `twin` (see [`Backend::decompose_mac_twin`]): the same
    /// result, with one digit transform fewer per output row where the backend takes the twin.
    /// `twin` must be the transform of `a`; a digit width that splits a residue is an error.
    pub fn decompose_mac_twin(
        &self,
        a: &Polys<B, Coeff>,
        twin: &Polys<B, Ntt>,
        digit_bits: u32,
        keys: [&Polys<B, Ntt>; 2],
        out: [&mut Polys<B, Ntt>; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        self.key_products(a, Some(twin), digit_bits, keys, out, accumulate)
    }

    /// [`Ring::decompose_mac`], and with `twin` [`Ring::decompose_mac_twin`]: the checks (`a`,
    /// the keys, the outputs and the twin on this ring; keys of `limbs * digits` polynomials, or
    /// a multiple of that dividing `a`'s polynomials;
    /// outputs and twin of `a`'s shape; one digit per limb with a twin), the backend's product,
    /// and the work counted (without the own-limb transforms a backend takes from the twin).
    fn key_products(
        &self,
        a: &Polys<B, Coeff>,
        twin: Option<&Polys<B, Ntt>>,
        digit_bits: u32,
        keys: [&Polys<B, Ntt>; 2],
        out: [&mut Polys<B, Ntt>; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        let what = if twin.is_some() { "decompose_mac_twin" } else { "decompose_mac" };
        self.check_own(a)?;
        check_digit_bits(digit_bits)?;
        let Shape { polys, limbs } = a.shape;
        let digits = self.digits(limbs, digit_bits);
        // Keys of several sets side by side: polynomial r meets set r % sets.
        let set = limbs * digits;
        let sets = keys[0].shape.polys / set.max(1);
        if sets > 1 && !polys.is_multiple_of(sets) {
            return Err(BackendError::Shape(format!("{what}: {polys} polys for {sets} key sets")));
        }
        self.check_keys(what, keys, Shape::new(sets.max(1) * set, limbs))?;
        for o in &out {
            self.check_own(&**o)?;
            if o.shape != a.shape {
                return Err(BackendError::Shape(format!("{what}: out {:?} vs a {:?}", o.shape, a.shape)));
            }
        }
        if let Some(t) = twin {
            self.check_own(t)?;
            if t.shape != a.shape {
                return Err(BackendError::Shape(format!("{what}: twin {:?} vs a {:?}", t.shape, a.shape)));
            }
            if digits != 1 {
                return Err(BackendError::InvalidInput(format!(
                    "{what}: {digit_bits}-bit digits split a residue into {digits}"
                )));
            }
        }
        if polys == 0 {
            return Ok(());
        }
        let [o0, o1] = out;
        let (keys, out) = ([&keys[0].buf, &keys[1].buf], [&mut o0.buf, &mut o1.buf]);
        let (dev, ctx) = (&self.dev, &self.ctx);
        let skipped = match twin {
            _ if sets > 1 => {
                let b = &self.backend;
                let t = twin.map(|t| &t.buf);
                let dims = (digit_bits, digits);
                b.decompose_mac_sets(
                    dev,
                    ctx,
                    &a.buf,
                    t,
                    (polys, limbs),
                    dims,
                    keys,
                    out,
                    (accumulate, sets),
                )?;
                if t.is_some() && b.takes_twin(self.n()) { polys * limbs } else { 0 }
            }
            None => {
                let dims = (digit_bits, digits);
                self.backend.decompose_mac(dev, ctx, &a.buf, (polys, limbs), dims, keys, out, accumulate)?;
                0
            }
            Some(t) => {
                let b = &self.backend;
                b.decompose_mac_twin(
                    dev,
                    ctx,
                    &a.buf,
                    &t.buf,
                    (polys, limbs),
                    digit_bits,
                    keys,
                    out,
                    accumulate,
                )?;
                if b.takes_twin(self.n()) { polys * limbs } else { 0 }
            }
        };
        crate::work::key_switches(polys, polys * limbs * limbs * digits - skipped);
        Ok(())
    }

    /// The two halves of a key-switching key, each of shape `want`, on this ring's backend.
    fn check_keys(&self, what: &str, keys: [&Polys<B, Ntt>; 2], want: Shape) -> Result<(), BackendError> {
        for k in keys {
            self.check_own(k)?;
            if k.shape != want {
                return Err(BackendError::Shape(format!("{what}: a key has {:?}, want {want:?}", k.shape)));
            }
        }
        Ok(())
    }

    /// Hybrid key switching (see [`Backend::keyswitch_hybrid`]): the key products `[b, a]` of
    /// `a` (coefficient form over the chain's `limbs` limbs, the ring's next limb being the
    /// special prime), divided by the special prime, in coefficient form. Each key holds
    /// `limbs + 1` polynomials of `limbs + 1` limbs.
    pub fn keyswitch_hybrid(
        &self,
        a: &Polys<B, Coeff>,
        keys: [&Polys<B, Ntt>; 2],
    ) -> Result<[Polys<B, Coeff>; 2], BackendError> {
        self.check_own(a)?;
        let Shape { polys, limbs } = a.shape;
        self.check_hybrid("keyswitch_hybrid", keys, limbs)?;
        let [mut o0, mut o1] = [self.zeros(a.shape)?, self.zeros(a.shape)?];
        if polys > 0 {
            self.backend.keyswitch_hybrid(
                &self.dev,
                &self.ctx,
                &a.buf,
                (polys, limbs),
                [&keys[0].buf, &keys[1].buf],
                [&mut o0.buf, &mut o1.buf],
            )?;
            count_hybrid(polys, limbs);
        }
        Ok([o0, o1])
    }

    /// [`Ring::keyswitch_hybrid`] with the products left in the NTT domain (see
    /// [`Backend::keyswitch_hybrid_ntt`]): the transforms of what it returns. `twin` is the
    /// NTT form of `a` (the caller's guarantee; the ring checks its shape).
    pub fn keyswitch_hybrid_ntt(
        &self,
        a: &Polys<B, Coeff>,
        twin: &Polys<B, Ntt>,
        keys: [&Polys<B, Ntt>; 2],
    ) -> Result<[Polys<B, Ntt>; 2], BackendError> {
        self.check_own(a)?;
        self.check_own(twin)?;
        let Shape { polys, limbs } = a.shape;
        self.check_hybrid("keyswitch_hybrid_ntt", keys, limbs)?;
        if twin.shape != a.shape {
            return Err(BackendError::Shape(format!(
                "keyswitch_hybrid_ntt: twin {:?} for {:?}",
                twin.shape, a.shape
            )));
        }
        let [mut o0, mut o1] = [self.zeros(a.shape)?, self.zeros(a.shape)?];
        if polys > 0 {
            self.backend.keyswitch_hybrid_ntt(
                &self.dev,
                &self.ctx,
                &a.buf,
                &twin.buf,
                (polys, limbs),
                [&keys[0].buf, &keys[1].buf],
                [&mut o0.buf, &mut o1.buf],
            )?;
            self.count_hybrid_ntt(polys, limbs);
        }
        Ok([o0, o1])
    }

    /// Counts `polys` key switches of [`Ring::keyswitch_hybrid_ntt`] as the backend does them
    /// ([`Backend::fuses_hybrid_ntt`]).
    fn count_hybrid_ntt(&self, polys: usize, limbs: usize) {
        if self.backend.fuses_hybrid_ntt() {
            // Digit rows less the twin's; P's two rows back, the remainders forward.
            crate::work::key_switches(polys, polys * limbs * limbs);
            crate::work::transforms(polys * (2 + 2 * limbs));
        } else {
            count_hybrid(polys, limbs);
            crate::work::transforms(2 * polys * limbs);
        }
    }

    /// The keys of a hybrid key switch of `limbs`-limb polynomials: `limbs + 1` polynomials of
    /// `limbs + 1` limbs each, the last limb a prime of the ring.
    fn check_hybrid(&self, what: &str, keys: [&Polys<B, Ntt>; 2], limbs: usize) -> Result<(), BackendError> {
        if limbs == 0 || limbs >= self.ctx.limbs() {
            return Err(BackendError::Shape(format!(
                "{what}: {limbs} limbs leave no special prime in a ring of {}",
                self.ctx.limbs()
            )));
        }
        self.check_keys(what, keys, Shape::new(limbs + 1, limbs + 1))
    }

    /// One level of oblivious expansion (see [`Backend::expand_step`]): for the `count`
    /// ciphertexts at `at` of `src` (`[c0s, c1s]`), `t = tau_g(c)` key-switched with `keys`
    /// (the `b` and `a` halves of a key for `tau_g(s)`, `digit_bits`-bit digits), writes
    /// `c + t` at `at` and `X^shift (c - t)` at `at + odd` of `dst`.
    #[allow(clippy::too_many_arguments)]
    pub fn expand_step(
        &self,
        src: [&Polys<B, Coeff>; 2],
        dst: [&mut Polys<B, Coeff>; 2],
        (at, count, odd): (usize, usize, usize),
        g: usize,
        digit_bits: u32,
        keys: [&Polys<B, Ntt>; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        check_digit_bits(digit_bits)?;
        let limbs = src[0].shape.limbs;
        let digits = self.digits(limbs, digit_bits);
        self.check_keys("expand_step", keys, Shape::new(limbs * digits, limbs))?;
        let idx = self.check_expand(&src, &dst, (at, count, odd), g, shift)?;
        if count == 0 {
            return Ok(());
        }
        let [d0, d1] = dst;
        self.backend.expand_step(
            &self.dev,
            &self.ctx,
            [&src[0].buf, &src[1].buf],
            [&mut d0.buf, &mut d1.buf],
            (at, count, odd),
            limbs,
            &idx,
            (digit_bits, digits),
            [&keys[0].buf, &keys[1].buf],
            shift,
        )?;
        crate::work::key_switches(count, count * limbs * limbs * digits);
        crate::work::transforms(2 * count * limbs);
        Ok(())
    }

    /// [`Ring::expand_step`] with a hybrid key switch (see [`Ring::keyswitch_hybrid`]).
    pub fn expand_step_hybrid(
        &self,
        src: [&Polys<B, Coeff>; 2],
        dst: [&mut Polys<B, Coeff>; 2],
        (at, count, odd): (usize, usize, usize),
        g: usize,
        keys: [&Polys<B, Ntt>; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        let limbs = src[0].shape.limbs;
        self.check_hybrid("expand_step_hybrid", keys, limbs)?;
        let idx = self.check_expand(&src, &dst, (at, count, odd), g, shift)?;
        if count == 0 {
            return Ok(());
        }
        let [d0, d1] = dst;
        self.backend.expand_step_hybrid(
            &self.dev,
            &self.ctx,
            [&src[0].buf, &src[1].buf],
            [&mut d0.buf, &mut d1.buf],
            (at, count, odd),
            limbs,
            &idx,
            [&keys[0].buf, &keys[1].buf],
            shift,
        )?;
        count_hybrid(count, limbs);
        Ok(())
    }

    /// [`Ring::expand_step_hybrid`] in the NTT domain (see [`Backend::expand_step_hybrid_ntt`]):
    /// sources and children in NTT form, the children the transforms of those
    /// [`Ring::expand_step_hybrid`] writes for the sources' inverse transforms.
    pub fn expand_step_hybrid_ntt(
        &self,
        src: [&Polys<B, Ntt>; 2],
        dst: [&mut Polys<B, Ntt>; 2],
        (at, count, odd): (usize, usize, usize),
        g: usize,
        keys: [&Polys<B, Ntt>; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        let limbs = src[0].shape.limbs;
        self.check_hybrid("expand_step_hybrid_ntt", keys, limbs)?;
        let idx = self.check_expand(&src, &dst, (at, count, odd), g, shift)?;
        let idx_ntt = self.gather_of(g, true)?;
        if count == 0 {
            return Ok(());
        }
        let [d0, d1] = dst;
        self.backend.expand_step_hybrid_ntt(
            &self.dev,
            &self.ctx,
            [&src[0].buf, &src[1].buf],
            [&mut d0.buf, &mut d1.buf],
            (at, count, odd),
            limbs,
            [&idx, &idx_ntt],
            [&keys[0].buf, &keys[1].buf],
            shift,
        )?;
        if self.backend.fuses_hybrid_ntt() {
            // The key switches, and c1 back for its digits.
            self.count_hybrid_ntt(count, limbs);
            crate::work::transforms(count * limbs);
        } else {
            // The coefficient-form step between both halves back and both children forward.
            count_hybrid(count, limbs);
            crate::work::transforms(6 * count * limbs);
        }
        Ok(())
    }

    /// One level of PackLWEs with a hybrid key (see [`Backend::pack_step_hybrid`]): for the
    /// `count` pairs `A = src[a_at + i]`, `B = src[b_at + i]`, writes
    /// `(A + X^shift B) + tau_g(A - X^shift B)` key-switched with `keys` (the `b` and `a` halves
    /// of a hybrid key for `tau_g(s)`) at `dst[out_at + i]`.
    #[allow(clippy::too_many_arguments)]
    pub fn pack_step_hybrid(
        &self,
        src: [&Polys<B, Coeff>; 2],
        dst: [&mut Polys<B, Coeff>; 2],
        (a_at, b_at, out_at, count): (usize, usize, usize, usize),
        g: usize,
        keys: [&Polys<B, Ntt>; 2],
        shift: usize,
    ) -> Result<(), BackendError> {
        let limbs = src[0].shape.limbs;
        self.check_hybrid("pack_step_hybrid", keys, limbs)?;
        let in_range = |p: &Polys<B, Coeff>, ends: &[usize]| {
            p.shape.limbs == limbs && ends.iter().all(|&e| e <= p.shape.polys)
        };
        for p in src {
            self.check_own(p)?;
        }
        for p in &dst {
            self.check_own(*p)?;
        }
        let ends = [a_at.checked_add(count), b_at.checked_add(count), out_at.checked_add(count)];
        let [Some(a_end), Some(b_end), Some(out_end)] = ends else {
            return Err(BackendError::Shape(format!("pack_step_hybrid: {count} pairs at {a_at}, {b_at}")));
        };
        if !src.iter().all(|p| in_range(p, &[a_end, b_end])) || !dst.iter().all(|p| in_range(p, &[out_end])) {
            return Err(BackendError::Shape(format!(
                "pack_step_hybrid: {count} pairs at {a_at} and {b_at} of {:?} into {out_at} of {:?}",
                src[0].shape, dst[0].shape
            )));
        }
        let idx = self.shift_and_gather(shift, g)?;
        if count == 0 {
            return Ok(());
        }
        let [d0, d1] = dst;
        self.backend.pack_step_hybrid(
            &self.dev,
            &self.ctx,
            [&src[0].buf, &src[1].buf],
            [&mut d0.buf, &mut d1.buf],
            (a_at, b_at, out_at, count),
            limbs,
            &idx,
            [&keys[0].buf, &keys[1].buf],
            shift,
        )?;
        count_hybrid(count, limbs);
        Ok(())
    }

    /// The gather of the automorphism `X -> X^g` (of NTT evaluations if `ntt`); an even `g`
    /// is an error.
    fn gather_of(&self, g: usize, ntt: bool) -> Result<Vec<u32>, BackendError> {
        crate::automorphism_index(self.n(), g, ntt)
            .ok_or_else(|| BackendError::InvalidInput(format!("automorphism exponent {g} is not odd")))
    }

    /// [`Self::gather_of`] `g` in coefficient form, after checking a monomial degree below `2N`.
    fn shift_and_gather(&self, shift: usize, g: usize) -> Result<Vec<u32>, BackendError> {
        if shift >= 2 * self.n() {
            return Err(BackendError::InvalidInput(format!("monomial degree {shift} is not below 2N")));
        }
        self.gather_of(g, false)
    }

    /// The shapes of an expansion level (every polynomial of `src` and `dst` with the same
    /// limbs, `[at, at + count)` and `[at + odd, ..)` inside them, `count <= odd`), and the
    /// gather of `X -> X^g`.
    fn check_expand<R: Repr>(
        &self,
        src: &[&Polys<B, R>; 2],
        dst: &[&mut Polys<B, R>; 2],
        (at, count, odd): (usize, usize, usize),
        g: usize,
        shift: usize,
    ) -> Result<Vec<u32>, BackendError> {
        let limbs = src[0].shape.limbs;
        for p in src {
            self.check_own(*p)?;
            if p.shape.limbs != limbs || p.shape.polys < at + count {
                return Err(BackendError::Shape(format!(
                    "expand_step: source {:?} for [{at}, {})",
                    p.shape,
                    at + count
                )));
            }
        }
        for p in dst {
            self.check_own(*p)?;
            if p.shape.limbs != limbs || p.shape.polys < at + odd + count || odd < count {
                return Err(BackendError::Shape(format!(
                    "expand_step: destination {:?} for {count} at {at} and {}",
                    p.shape,
                    at + odd
                )));
            }
        }
        self.shift_and_gather(shift, g)
    }

    /// `out[r][c] (+)= sum_i a[r][i] * b[i][c]` pointwise in the NTT domain; see
    /// [`Backend::mac`]. All three must have the same number of limbs.
    pub fn mac(
        &self,
        out: &mut Polys<B, Ntt>,
        a: &Polys<B, Ntt>,
        b: &Polys<B, Ntt>,
        dims: MacDims,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        self.check_own(b)?;
        if !self.mac_needs_product(out, a, b.shape, dims, accumulate)? {
            return Ok(());
        }
        let limbs = out.shape.limbs;
        self.backend.mac(&self.dev, &mut out.buf, &a.buf, &b.buf, dims, limbs, accumulate)?;
        crate::work::mac_products(dims.rows * dims.inner * dims.cols * limbs * self.n());
        Ok(())
    }

    /// `outs[k] (+)= a * keys[k]` for `k = 0, 1` ([`Backend::mul_broadcast_pair`]): every
    /// polynomial of `a` times one key polynomial of `a`'s limbs, into outputs of `a`'s shape
    /// (overwritten with `accumulate = false`).
    pub fn mul_broadcast_pair(
        &self,
        a: &Polys<B, Ntt>,
        keys: [&Polys<B, Ntt>; 2],
        outs: [&mut Polys<B, Ntt>; 2],
        accumulate: bool,
    ) -> Result<(), BackendError> {
        self.check_own(a)?;
        let key_shape = Shape::new(1, a.shape.limbs);
        for key in keys {
            self.check_own(key)?;
            if key.shape != key_shape {
                return Err(BackendError::Shape(format!(
                    "a broadcast key of {:?} for {:?}",
                    key.shape, a.shape
                )));
            }
        }
        for out in &outs {
            self.check_pair(a, out)?;
        }
        if a.shape.polys == 0 {
            return Ok(());
        }
        let [o0, o1] = outs;
        self.backend.mul_broadcast_pair(
            &self.dev,
            &a.buf,
            [&keys[0].buf, &keys[1].buf],
            [&mut o0.buf, &mut o1.buf],
            a.shape,
            accumulate,
        )?;
        crate::work::mac_products(2 * a.shape.words(self.n()));
        Ok(())
    }

    /// The checks of a multiply-accumulate (`b_shape` the right operand's shape, row-major):
    /// false where no product is left to run (no output polynomials, or an empty sum written
    /// as zeros here, without asking the backend about a degenerate product).
    fn mac_needs_product(
        &self,
        out: &mut Polys<B, Ntt>,
        a: &Polys<B, Ntt>,
        b_shape: Shape,
        dims: MacDims,
        accumulate: bool,
    ) -> Result<bool, BackendError> {
        self.check_own(out)?;
        self.check_own(a)?;
        let limbs = out.shape.limbs;
        let want = |what: &str, have: Shape, polys: Option<usize>| match polys {
            Some(p) if have.polys == p && have.limbs == limbs => Ok(()),
            _ => Err(BackendError::Shape(format!("mac {dims:?}: {what} has {have:?}, limbs {limbs}"))),
        };
        want("a", a.shape, dims.rows.checked_mul(dims.inner))?;
        want("b", b_shape, dims.inner.checked_mul(dims.cols))?;
        want("out", out.shape, dims.rows.checked_mul(dims.cols))?;
        if dims.rows == 0 || dims.cols == 0 {
            return Ok(false);
        }
        if dims.inner == 0 && !accumulate {
            *out = self.zeros(out.shape)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// `b` (`inner x cols` polynomials, row-major) as the right operand of
    /// [`Ring::mac_laid_out`], in the backend's layout ([`Backend::mac_layout`]); `b` is
    /// consumed (no copy is kept).
    pub fn mac_operand(
        &self,
        b: Polys<B, Ntt>,
        inner: usize,
        cols: usize,
    ) -> Result<MacOperand<B>, BackendError> {
        self.check_own(&b)?;
        if Some(b.shape.polys) != inner.checked_mul(cols) {
            return Err(BackendError::Shape(format!("a {inner} x {cols} mac operand from {:?}", b.shape)));
        }
        let limbs = b.shape.limbs;
        let buf = self.backend.mac_layout(&self.dev, b.buf, inner, cols, limbs)?;
        Ok(MacOperand { buf, inner, cols, limbs, ring_id: self.id })
    }

    /// [`Ring::mac_operand`] built part by part, without the whole operand in row-major form:
    /// `part(first, count)` gives polynomials `[first, first + count)` (row-major, NTT form,
    /// `limbs` limbs), `count` at most `part_polys`, in order; each is laid out
    /// ([`Backend::mac_layout_part`]) and dropped. Holds the laid-out operand and one part
    /// instead of the operand twice (a table's records are gigabytes).
    pub fn mac_operand_from_parts<E: From<BackendError>>(
        &self,
        (inner, cols, limbs): (usize, usize, usize),
        part_polys: usize,
        mut part: impl FnMut(usize, usize) -> Result<Polys<B, Ntt>, E>,
    ) -> Result<MacOperand<B>, E> {
        let total =
            inner.checked_mul(cols).ok_or_else(|| BackendError::Shape(format!("{inner} x {cols}")))?;
        self.check_shape(Shape::new(total, limbs))?;
        let n = self.n();
        let mut dst = self.backend.alloc_zeroed(Shape::new(total, limbs).words(n))?;
        let step = part_polys.max(1);
        for first in (0..total).step_by(step) {
            let count = step.min(total - first);
            let p = part(first, count)?;
            self.check_own(&p)?;
            if p.shape != Shape::new(count, limbs) {
                return Err(BackendError::Shape(format!(
                    "part {first}..+{count} of {limbs} limbs: {:?}",
                    p.shape
                ))
                .into());
            }
            self.backend.mac_layout_part(
                &self.dev,
                &mut dst,
                &p.buf,
                (first, count),
                (inner, cols, limbs, n),
            )?;
        }
        Ok(MacOperand { buf: dst, inner, cols, limbs, ring_id: self.id })
    }

    /// [`Ring::mac`] with a right operand from [`Ring::mac_operand`]: `out[rows x cols] (+)=
    /// a[rows x inner] * b`, bit-identical to `mac` with `b` before its move.
    pub fn mac_laid_out(
        &self,
        out: &mut Polys<B, Ntt>,
        a: &Polys<B, Ntt>,
        b: &MacOperand<B>,
        rows: usize,
        accumulate: bool,
    ) -> Result<(), BackendError> {
        if b.ring_id != self.id {
            return Err(BackendError::RingMismatch);
        }
        let dims = MacDims { rows, inner: b.inner, cols: b.cols };
        if !self.mac_needs_product(out, a, b.shape(), dims, accumulate)? {
            return Ok(());
        }
        let limbs = b.limbs;
        self.backend.mac_laid_out(&self.dev, &mut out.buf, &a.buf, &b.buf, dims, limbs, accumulate)?;
        crate::work::mac_products(rows * dims.inner * dims.cols * limbs * self.n());
        Ok(())
    }
}

/// Counts `polys` hybrid key switches of `limbs`-limb polynomials as the gadget's are counted:
/// the digit rows (`limbs` digits, each transformed into `limbs + 1` primes) in the key
/// switches, the inverse transforms of both products (`limbs + 1` limbs each) beside them.
fn count_hybrid(polys: usize, limbs: usize) {
    crate::work::key_switches(polys, polys * limbs * (limbs + 1));
    crate::work::transforms(2 * polys * (limbs + 1));
}

/// Gadget digits are 1 to 31 bits wide (a digit of a 31-bit residue fits one word).
fn check_digit_bits(digit_bits: u32) -> Result<(), BackendError> {
    if (1..=31).contains(&digit_bits) {
        Ok(())
    } else {
        Err(BackendError::InvalidInput(format!("digit width {digit_bits} (1 to 31 bits)")))
    }
}
