//! The three messages, encoded with [`crate::wire`] against a parameter set.

use fastquery_he::{
    Params, PublicKey,
    client::{ResponseC1, ResponseCiphertext, SeededCiphertext},
    galois::GaloisKey,
    rounding::{C1Rounding, response_rounding},
    share::{ShareKeys, Sharing, StageKeys, share_key_shape},
};
use fastquery_math::RnsBasis;

use std::sync::Arc;

use rayon::prelude::*;

use crate::wire::{Kind, Reader, WireError, Writer, bit_width};

/// Bounds a receiver enforces before allocating anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body, in bytes.
    pub max_body: usize,
    /// Most tokens in one query.
    pub max_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body: u32::MAX as usize, max_tokens: 4096 }
    }
}

/// Residues `[limb][coefficient]` over the first `limbs` primes, `words.len() / limbs`
/// coefficients per limb (`N`, or `N/2` for a `c` in the half ring).
fn write_poly_rows(w: &mut Writer, params: &Params, words: &[u32], limbs: usize) {
    let n = words.len() / limbs.max(1);
    for (l, m) in params.ring().moduli()[..limbs].iter().enumerate() {
        w.residues(&words[l * n..(l + 1) * n], m.value());
    }
}

fn read_poly_rows(r: &mut Reader<'_>, params: &Params, limbs: usize) -> Result<Vec<u32>, WireError> {
    read_rows(r, params, limbs, params.n())
}

fn read_rows(r: &mut Reader<'_>, params: &Params, limbs: usize, n: usize) -> Result<Vec<u32>, WireError> {
    let mut out = Vec::with_capacity(limbs * n);
    for m in &params.ring().moduli()[..limbs] {
        r.residues(n, m.value(), &mut out)?;
    }
    Ok(out)
}

/// Setup: the client's public key (`p0` over the chain's limbs, seed of `a`), then the Galois
/// keys a scheme needs (count, then per key its exponent, its `b` rows over the key's limbs,
/// the special prime's included, and the seed of its `a` rows), then, for a scheme whose
/// responses are switched to `n` fresh secrets ([`fastquery_he::share`]: groups of `n` sharing
/// `c1`, or `c` in the half ring), `n` and, stage by stage ([`Sharing::stages`]), per source
/// its seed and the `b` rows of its keys, one per target.
pub fn encode_setup(
    params: &Params,
    scheme: u8,
    pk: &PublicKey,
    galois: &[GaloisKey],
    share: Option<&ShareKeys>,
) -> Vec<u8> {
    let mut w = Writer::new(Kind::Setup, scheme, params.id());
    write_poly_rows(&mut w, params, &pk.p0, params.limbs());
    w.bytes(&pk.seed);
    w.u32(galois.len() as u32);
    let poly = params.n() * params.key_limbs();
    for k in galois {
        w.u32(k.g as u32);
        for rows in k.b.chunks_exact(poly) {
            write_poly_rows(&mut w, params, rows, params.key_limbs());
        }
        w.bytes(&k.seed);
    }
    if let Some(share) = share {
        let limbs = share_key_shape(params).1;
        let poly = params.n() * limbs;
        // The group size: the last stage's targets.
        w.u32(share.stages.last().map_or(0, |s| s.targets(params)) as u32);
        for stage in &share.stages {
            let per_source = stage.targets(params) * ShareKeys::key_words(params);
            for (a, seed) in stage.seeds.iter().enumerate() {
                w.bytes(seed);
                for row in stage.b[a * per_source..(a + 1) * per_source].chunks_exact(poly) {
                    write_poly_rows(&mut w, params, row, limbs);
                }
            }
        }
    }
    w.finish()
}

/// Bytes of a setup message with `keys` Galois keys of `key_bits`-bit digits and the keys of
/// `sharing` (none where its responses are not keyed): what [`encode_setup`] writes.
pub fn setup_bytes(params: &Params, keys: usize, key_bits: u32, sharing: Sharing) -> usize {
    let (key_polys, key_limbs) =
        if keys == 0 { (0, 0) } else { fastquery_he::galois::key_shape(params, key_bits) };
    let shared = if sharing.keyed() {
        let (polys, limbs) = share_key_shape(params);
        let key = polys * rows_bits(params, limbs);
        32 + sharing.stages().iter().map(|&(sources, targets)| sources * (256 + targets * key)).sum::<usize>()
    } else {
        0
    };
    let bits = rows_bits(params, params.limbs())
        + 256
        + 32
        + keys * (32 + key_polys * rows_bits(params, key_limbs) + 256)
        + shared;
    crate::wire::HEADER_BYTES + bits.div_ceil(8)
}

/// Bits of one polynomial's residues over the ring's first `limbs` primes.
fn rows_bits(params: &Params, limbs: usize) -> usize {
    params.ring().moduli()[..limbs].iter().map(|m| bit_width(u64::from(m.value())) as usize).sum::<usize>()
        * params.n()
}

/// What a setup message carries: the public key, the Galois keys, and the keys of a shared
/// `c1` where the scheme's responses share one.
pub type Setup = (PublicKey, Vec<GaloisKey>, Option<ShareKeys>);

/// Decodes a setup message; the Galois keys must be exactly those of `elements`, in that
/// order, each laid out as [`key_shape`](fastquery_he::galois::key_shape) says for `key_bits`,
/// followed by the keys of `sharing` where its responses are keyed.
pub fn decode_setup(
    params: &Params,
    scheme: u8,
    msg: &[u8],
    limits: Limits,
    (elements, key_bits): (&[usize], u32),
    sharing: Sharing,
) -> Result<Setup, WireError> {
    let share = sharing.targets();
    let (polys, limbs) = fastquery_he::galois::key_shape(params, key_bits);
    let mut r = Reader::open(msg, Kind::Setup, scheme, params.id(), limits.max_body)?;
    let p0 = read_poly_rows(&mut r, params, params.limbs())?;
    let seed = r.bytes::<32>()?;
    let count = r.count("Galois keys", elements.len())?;
    if count != elements.len() {
        return Err(WireError::Field(format!("{count} Galois keys, the scheme needs {}", elements.len())));
    }
    let mut keys = Vec::with_capacity(count);
    for &g in elements {
        let got = r.count("Galois exponent", 2 * params.n())?;
        if got != g {
            return Err(WireError::Field(format!("Galois key for X^{got}, expected X^{g}")));
        }
        let mut b = Vec::with_capacity(polys * limbs * params.n());
        for _ in 0..polys {
            b.extend(read_poly_rows(&mut r, params, limbs)?);
        }
        keys.push(GaloisKey { g, b, seed: r.bytes::<32>()? });
    }
    let shared = if sharing.keyed() {
        let got = r.count("responses sharing c1", fastquery_he::share::MAX_SHARED)?;
        if got != share {
            return Err(WireError::Field(format!(
                "keys for {got} responses sharing c1, the scheme shares {share}"
            )));
        }
        let (polys, limbs) = share_key_shape(params);
        let mut stages = Vec::new();
        for (sources, targets) in sharing.stages() {
            let mut seeds = Vec::with_capacity(sources);
            let mut b = Vec::with_capacity(sources * targets * polys * limbs * params.n());
            for _ in 0..sources {
                seeds.push(r.bytes::<32>()?);
                for _ in 0..targets * polys {
                    b.extend(read_poly_rows(&mut r, params, limbs)?);
                }
            }
            stages.push(StageKeys { seeds, b });
        }
        Some(ShareKeys { stages })
    } else {
        None
    };
    r.end()?;
    Ok((PublicKey { p0, seed }, keys, shared))
}

/// Bytes of one query record: `c0` over all limbs and a 32-byte seed, padded to a byte.
pub fn query_record_bytes(params: &Params) -> usize {
    query_record_bytes_sent(params, params.n())
}

/// Bytes of one query record that carries `sent` coefficients of `c0` (over all limbs) and a
/// 32-byte seed, padded to a byte.
pub fn query_record_bytes_sent(params: &Params, sent: usize) -> usize {
    (rows_bits(params, params.limbs()) / params.n() * sent + 256).div_ceil(8)
}

/// Query: the token count, then each seeded ciphertext as a byte-aligned record (`c0` over all
/// limbs, 32-byte seed). Records are encoded and decoded in parallel.
pub fn encode_query(params: &Params, scheme: u8, tokens: usize, cts: &[SeededCiphertext]) -> Vec<u8> {
    encode_query_records(params, scheme, tokens, cts, &|_| None)
}

/// [`encode_query`] for a scheme whose server reads only some coefficients of each query
/// ciphertext's `c0`: those of `sent[i]` (ascending, below `N`) for ciphertext `i`, limb by
/// limb. The seed still carries the whole `c1`.
pub fn encode_query_sent(
    params: &Params,
    scheme: u8,
    tokens: usize,
    cts: &[SeededCiphertext],
    sent: &[Arc<[usize]>],
) -> Vec<u8> {
    assert_eq!(cts.len(), sent.len(), "one list of sent coefficients per query ciphertext");
    encode_query_records(params, scheme, tokens, cts, &|i| Some(&sent[i]))
}

fn encode_query_records<'a>(
    params: &Params,
    scheme: u8,
    tokens: usize,
    cts: &[SeededCiphertext],
    sent: &(dyn Fn(usize) -> Option<&'a [usize]> + Sync),
) -> Vec<u8> {
    let n = params.n();
    let records: Vec<Vec<u8>> = cts
        .par_iter()
        .enumerate()
        .map(|(i, ct)| {
            let mut w = Writer::body_only();
            match sent(i) {
                None => write_poly_rows(&mut w, params, &ct.c0, params.limbs()),
                Some(at) => {
                    for (l, m) in params.ring().moduli()[..params.limbs()].iter().enumerate() {
                        let row = &ct.c0[l * n..(l + 1) * n];
                        w.residues(&at.iter().map(|&j| row[j]).collect::<Vec<u32>>(), m.value());
                    }
                }
            }
            w.bytes(&ct.seed);
            w.finish()
        })
        .collect();
    let mut w = Writer::new(Kind::Query, scheme, params.id());
    w.u32(tokens as u32);
    w.reserve(records.iter().map(Vec::len).sum());
    records.iter().for_each(|r| w.record(r));
    w.finish()
}

/// Decodes a query of `cts_for(tokens)` ciphertexts.
pub fn decode_query(
    params: &Params,
    scheme: u8,
    msg: &[u8],
    cts_for: &dyn Fn(usize) -> usize,
    limits: Limits,
) -> Result<(usize, Vec<SeededCiphertext>), WireError> {
    decode_query_records(params, scheme, msg, &|t| vec![None; cts_for(t)], limits)
}

/// Decodes a query [`encode_query_sent`] wrote, `sent_for(tokens)` listing the coefficients
/// of each ciphertext's `c0` it carries; the others are zero. (Ciphertexts of the same layout
/// share one list, so a message claiming many tokens costs the decoder a handful of lists
/// before its length is checked.)
pub fn decode_query_sent(
    params: &Params,
    scheme: u8,
    msg: &[u8],
    sent_for: &dyn Fn(usize) -> Vec<Arc<[usize]>>,
    limits: Limits,
) -> Result<(usize, Vec<SeededCiphertext>), WireError> {
    decode_query_records(params, scheme, msg, &|t| sent_for(t).into_iter().map(Some).collect(), limits)
}

fn decode_query_records(
    params: &Params,
    scheme: u8,
    msg: &[u8],
    sent_for: &dyn Fn(usize) -> Vec<Option<Arc<[usize]>>>,
    limits: Limits,
) -> Result<(usize, Vec<SeededCiphertext>), WireError> {
    let mut r = Reader::open(msg, Kind::Query, scheme, params.id(), limits.max_body)?;
    let tokens = r.count("tokens", limits.max_tokens)?;
    if tokens == 0 {
        return Err(WireError::Field("a query of zero tokens".into()));
    }
    let n = params.n();
    let sent = sent_for(tokens);
    let sizes: Vec<usize> = sent
        .iter()
        .map(|at| {
            at.as_ref()
                .map_or_else(|| query_record_bytes(params), |at| query_record_bytes_sent(params, at.len()))
        })
        .collect();
    let body = r.take(sizes.iter().sum())?; // checks the length before anything is allocated
    r.end()?;
    let mut records = Vec::with_capacity(sizes.len());
    let mut rest = body;
    for size in &sizes {
        let (rec, tail) = rest.split_at(*size);
        records.push(rec);
        rest = tail;
    }
    records
        .into_par_iter()
        .zip(sent.par_iter())
        .map(|(rec, at)| {
            let mut r = Reader::record(rec);
            let c0 = match at {
                None => read_poly_rows(&mut r, params, params.limbs())?,
                Some(at) => {
                    let mut c0 = vec![0u32; params.limbs() * n];
                    let mut row = Vec::with_capacity(at.len());
                    for (l, m) in params.ring().moduli()[..params.limbs()].iter().enumerate() {
                        row.clear();
                        r.residues(at.len(), m.value(), &mut row)?;
                        for (&j, &v) in at.iter().zip(&row) {
                            c0[l * n + j] = v;
                        }
                    }
                    c0
                }
            };
            let seed = r.bytes::<32>()?;
            r.end()?;
            Ok(SeededCiphertext { c0, seed })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|cts| (tokens, cts))
}

/// Width of a kept `c0` coefficient after dropping `drop_bits` bits of a value mod `q'`
/// ([`fastquery_he::rounding::c0_width`]: the width of the largest rounded value).
pub fn c0_width(params: &Params, drop_bits: u32) -> u32 {
    c0_range(params, drop_bits).0
}

/// The width of a kept `c0` coefficient and the largest value a decoder accepts. Where `q'`
/// is past the response arithmetic's `2^126` (no design gets there), one bit more than `q'`
/// less the dropped bits, and half its range.
fn c0_range(params: &Params, drop_bits: u32) -> (u32, u128) {
    match params.response_modulus() {
        Ok(q) => {
            (fastquery_he::rounding::c0_width(q, drop_bits), fastquery_he::rounding::c0_largest(q, drop_bits))
        }
        Err(_) => {
            let width = (params.log2_q_response().ceil() as u32).saturating_sub(drop_bits) + 1;
            (width, 1u128.checked_shl(width - 1).map_or(u128::MAX, |v| v + 1))
        }
    }
}

/// Bits of `c1` in a response record: `w` per coefficient when it is rounded to `w` bits
/// ([`fastquery_he::rounding`]), else its residues over the response limbs.
pub(crate) fn c1_bits(params: &Params, rounded: u32, coeffs: usize) -> usize {
    if rounded > 0 {
        return rounded as usize * coeffs;
    }
    params.moduli()[..params.response_limbs()]
        .iter()
        .map(|m| bit_width(u64::from(m.value())) as usize)
        .sum::<usize>()
        * coeffs
}

/// Bytes of a response: the header, its two width bytes, and one byte-aligned record per
/// ciphertext keeping `kept[i]` coefficients of `c0`, with `c1` in every `share`-th record
/// (the first of each group sharing it; every record for `share <= 1`).
pub fn response_bytes(
    params: &Params,
    noise: &fastquery_he::noise::NoiseReport,
    kept: &[usize],
    sharing: Sharing,
) -> usize {
    let width = c0_width(params, noise.drop_bits) as usize;
    let c1_len = c1_bits(params, noise.c1_bits, sharing.c1_coeffs(params.n()));
    crate::wire::HEADER_BYTES + 2 + record_sizes(kept, sharing.group(), c1_len, width).iter().sum::<usize>()
}

/// Bytes of each response record: `c1` (`c1_len` bits) in the first of each group of `share`,
/// then `kept[i]` coefficients of `width` bits.
fn record_sizes(kept: &[usize], share: usize, c1_len: usize, width: usize) -> Vec<usize> {
    let share = share.max(1);
    kept.iter()
        .enumerate()
        .map(|(i, &k)| (if i % share == 0 { c1_len } else { 0 } + k * width).div_ceil(8))
        .collect()
}

/// The rounding of `c1` a response declares, or `None` for residues; an error for a width the
/// response modulus cannot hold.
fn c1_rounding(params: &Params, bits: u32) -> Result<Option<(RnsBasis, C1Rounding)>, WireError> {
    if bits == 0 {
        return Ok(None);
    }
    response_rounding(params, bits).map(Some).map_err(|e| WireError::Field(format!("c1 of {bits} bits: {e}")))
}

/// Response `i`'s `c1` as residues over the response limbs (borrowed where it is residues, lifted
/// where it was rounded), `coeffs` per limb; an error for any other length or a width the
/// response modulus cannot hold.
fn c1_residues<'a>(
    params: &Params,
    c1: &'a ResponseC1,
    coeffs: usize,
    i: usize,
) -> Result<std::borrow::Cow<'a, [u32]>, WireError> {
    let words = c1.residues(params).map_err(|e| WireError::Field(format!("response {i}'s c1: {e}")))?;
    if words.len() != params.response_limbs() * coeffs {
        return Err(WireError::Field(format!(
            "response {i}: a c1 of {} words, expected {} limbs of {coeffs}",
            words.len(),
            params.response_limbs()
        )));
    }
    Ok(words)
}

/// Response: the dropped bit count and the width of `c1` (0: residues), then each ciphertext as
/// a byte-aligned record (`c1`, then its kept `c0` coefficients); where groups of `share`
/// ciphertexts share `c1`, only the first record of each group holds it, and where `c` is in
/// the half ring only its `N/2` even coefficients travel. How many
/// coefficients each ciphertext keeps, and the groups, are fixed by the layout, which both
/// sides know; they are not sent. A `c1` the finish rounded to `c1_width` bits is written as
/// it is; residues, or values rounded to another width (lifted first), are rounded here. An
/// error for a width the response modulus cannot hold.
pub fn encode_response(
    params: &Params,
    scheme: u8,
    (drop_bits, c1_width): (u32, u32),
    cts: &[ResponseCiphertext],
    sharing: Sharing,
) -> Result<Vec<u8>, WireError> {
    let share = sharing.group();
    let width = c0_width(params, drop_bits);
    let rounding = c1_rounding(params, c1_width)?;
    let coeffs = sharing.c1_coeffs(params.n());
    let records = cts
        .par_iter()
        .enumerate()
        .map(|(i, ct)| {
            let mut w = Writer::body_only();
            match (&rounding, &ct.c1) {
                _ if i % share != 0 => {}
                // Rounded by the finish at this width: written as it is.
                (Some(_), ResponseC1::Rounded { bits, values }) if *bits == c1_width => {
                    if values.len() != coeffs
                        || values.iter().any(|&h| h.checked_shr(c1_width).is_some_and(|high| high != 0))
                    {
                        return Err(WireError::Field(format!(
                            "response {i}: a c1 of {} values of {c1_width} bits, expected {coeffs}",
                            values.len()
                        )));
                    }
                    w.bits_many(values, c1_width)
                }
                // Any other form is lifted to residues first (a rounded c1 keeps its rounding's
                // error).
                (Some((basis, r)), c1) => {
                    w.bits_many(&r.round_residues(basis, &c1_residues(params, c1, coeffs, i)?), c1_width)
                }
                (None, c1) => write_poly_rows(
                    &mut w,
                    params,
                    &c1_residues(params, c1, coeffs, i)?,
                    params.response_limbs(),
                ),
            }
            ct.c0.iter().for_each(|&v| w.bits_u128(v, width));
            Ok(w.finish())
        })
        .collect::<Result<Vec<Vec<u8>>, WireError>>()?;
    let mut w = Writer::new(Kind::Response, scheme, params.id());
    w.bits(u64::from(drop_bits), 8);
    // 0 exactly where c1 travels as residues (any other width has its rounding, checked above).
    w.bits(u64::from(c1_width), 8);
    w.reserve(records.iter().map(Vec::len).sum());
    records.iter().for_each(|r| w.record(r));
    Ok(w.finish())
}

/// Decodes a response whose ciphertext `i` keeps `kept[i]` coefficients, groups of `share`
/// sharing the `c1` of their first (the others come back with an empty `c1`); a rounded `c1`
/// comes back as the residues of its lifted values.
pub fn decode_response(
    params: &Params,
    scheme: u8,
    msg: &[u8],
    (kept, sharing): (&[usize], Sharing),
    limits: Limits,
) -> Result<(u32, Vec<ResponseCiphertext>), WireError> {
    let share = sharing.group();
    let mut r = Reader::open(msg, Kind::Response, scheme, params.id(), limits.max_body)?;
    let drop_bits = r.bits(8)? as u32;
    if drop_bits >= params.log2_q_response() as u32 {
        return Err(WireError::Field(format!("{drop_bits} dropped bits leave nothing of c0")));
    }
    let c1_width = r.bits(8)? as u32;
    let rounding = c1_rounding(params, c1_width)?;
    let (width, limit) = c0_range(params, drop_bits);
    let n = sharing.c1_coeffs(params.n());
    let c1_len = c1_bits(params, c1_width, n);
    let sizes = record_sizes(kept, share, c1_len, width as usize);
    let body = r.take(sizes.iter().sum())?;
    r.end()?;
    let mut records = Vec::with_capacity(kept.len());
    let mut off = 0;
    for (i, (&size, &k)) in sizes.iter().zip(kept).enumerate() {
        records.push((&body[off..off + size], k, i % share == 0));
        off += size;
    }
    let cts = records
        .par_iter()
        .map(|&(rec, k, with_c1)| {
            let mut r = Reader::record(rec);
            let c1 = match &rounding {
                _ if !with_c1 => Vec::new(),
                None => read_rows(&mut r, params, params.response_limbs(), n)?,
                Some((basis, round)) => {
                    let hs = (0..n).map(|_| r.bits(c1_width)).collect::<Result<Vec<_>, _>>()?;
                    round.lift_residues(basis, &hs)
                }
            };
            let c0 = (0..k)
                .map(|_| {
                    let v = r.bits_u128(width)?;
                    if v > limit {
                        Err(WireError::Field(format!("c0 value {v} out of range")))
                    } else {
                        Ok(v)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            r.end()?;
            Ok(ResponseCiphertext { c1: ResponseC1::Residues(c1), c0 })
        })
        .collect::<Result<Vec<_>, WireError>>()?;
    Ok((drop_bits, cts))
}
