//! Automorphisms, key switching, packing and expansion on encrypted data (CPU backend): each
//! result decrypts to the expected plaintext, with measured noise inside the computed bound.

use std::sync::Arc;

use fastquery_backend::Ring;
use fastquery_cpu::CpuBackend;
use fastquery_he::{
    ParamSpec, Params,
    client::{Client, noise_of},
    fold::{FoldShape, cmux_halves, cmux_rotate, fold_noise, gadget_slot, rgsw_from_rows},
    galois::{
        Ciphertexts, ServerGaloisKey, SlotLayout, automorphism, expand, expand_positioned,
        expand_positioned_ntt, expand_slots, gadget, keyswitch_bound, load_ciphertexts, load_galois_key,
        pack_strided, pack_strided_gathered, pack_strided_in, packing_elements,
    },
};
use num_bigint::{BigInt, BigUint};
use num_traits::{Signed, ToPrimitive};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn params() -> Arc<Params> {
    Arc::new(
        Params::new(ParamSpec {
            n: 2048,
            prime_bits: vec![27, 27],
            response_limbs: 2,
            plain_bits: 16,
            flood_bits: 40,
            special_bits: 0,
        })
        .unwrap(),
    )
}

/// A chain of two 31-bit primes with a 31-bit special prime (hybrid key switching).
fn hybrid_params() -> Arc<Params> {
    Arc::new(
        Params::new(ParamSpec {
            n: 4096,
            prime_bits: vec![31, 31],
            response_limbs: 2,
            plain_bits: 16,
            flood_bits: 40,
            special_bits: 31,
        })
        .unwrap(),
    )
}

/// Decrypts every coefficient of every ciphertext; returns (messages mod t, max noise).
fn decrypt_all(
    client: &Client,
    ring: &Ring<CpuBackend>,
    cts: &Ciphertexts<CpuBackend>,
) -> (Vec<Vec<u64>>, f64) {
    let p = client.params();
    let (n, limbs) = (p.n(), p.limbs());
    let q: BigUint = p.basis().modulus().clone();
    let (c0, c1) = (ring.download(&cts.c0).unwrap(), ring.download(&cts.c1).unwrap());
    let t = 1u64 << p.plain_bits();
    let mut worst = 0f64;
    let msgs = (0..cts.len())
        .map(|i| {
            let r = i * n * limbs..(i + 1) * n * limbs;
            let phase = client.phase(&c0[r.clone()], &c1[r], limbs).unwrap();
            phase
                .iter()
                .map(|v| {
                    // round(t v / q) mod t, on the centred phase.
                    let qi = BigInt::from(q.clone());
                    let ti = BigInt::from(t);
                    let num: BigInt = v * &ti * 2 + &qi;
                    let den: BigInt = &qi * 2;
                    // Floor division (num may be negative).
                    let mut scaled: BigInt = &num / &den;
                    let rem: BigInt = &num % &den;
                    if rem.is_negative() {
                        scaled -= 1;
                    }
                    let m: u64 = ((scaled % &ti + &ti) % &ti).to_u64().unwrap();
                    let e = noise_of(&((v % &qi + &qi) % &qi), m, &q, p.plain_bits());
                    worst = worst.max(e.to_f64().unwrap());
                    m
                })
                .collect()
        })
        .collect();
    (msgs, worst)
}

fn encrypt(client: &Client, ring: &Ring<CpuBackend>, msgs: &[Vec<u64>]) -> Ciphertexts<CpuBackend> {
    let t = 1i64 << client.params().plain_bits();
    let sparse: Vec<Vec<(usize, i64)>> = msgs
        .iter()
        .map(|m| {
            m.iter()
                .enumerate()
                .map(|(j, &v)| (j, if v as i64 >= t / 2 { v as i64 - t } else { v as i64 }))
                .collect()
        })
        .collect();
    // encrypt_sparse encodes v * round(q/t): exact only for small |v|; tests keep |v| < 8.
    load_ciphertexts(ring, client.params(), &client.encrypt_sparse(&sparse).unwrap()).unwrap()
}

/// The Galois keys of a `2^k`-slot expansion (`X -> X^(N/2^j + 1)`, `j < k`), loaded.
fn expansion_keys(
    client: &Client,
    ring: &Ring<CpuBackend>,
    k: u32,
    w: u32,
) -> Vec<ServerGaloisKey<CpuBackend>> {
    let params = client.params();
    let elements: Vec<usize> = (0..k).map(|j| params.n() / (1 << j) + 1).collect();
    client
        .galois_keys(&elements, w)
        .unwrap()
        .iter()
        .map(|key| load_galois_key(ring, params, key, w).unwrap())
        .collect()
}

fn small_msgs(rng: &mut StdRng, count: usize, n: usize, t: u64) -> Vec<Vec<u64>> {
    (0..count)
        .map(|_| (0..n).map(|_| (rng.random_range(-7i64..8)).rem_euclid(t as i64) as u64).collect())
        .collect()
}

#[test]
fn automorphism_of_a_ciphertext_decrypts_to_the_automorphism_of_its_plaintext() {
    let mut rng = StdRng::seed_from_u64(5);
    let params = params();
    let (n, t) = (params.n(), 1u64 << params.plain_bits());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    for w in [27u32, 9] {
        let gs = [3usize, n + 1, 2 * n - 1, 2 * rng.random_range(0..n) + 1];
        let keys = client.galois_keys(&gs, w).unwrap();
        let msgs = small_msgs(&mut rng, 2, n, t);
        let cts = encrypt(&client, &ring, &msgs);
        let (_, fresh) = decrypt_all(&client, &ring, &cts);
        for key in &keys {
            let sk = load_galois_key(&ring, &params, key, w).unwrap();
            let out = automorphism(&ring, &cts, &sk).unwrap();
            let (got, noise) = decrypt_all(&client, &ring, &out);
            for (m, g) in msgs.iter().zip(&got) {
                let mut want = vec![0u64; n];
                for (j, &v) in m.iter().enumerate() {
                    let e = j * key.g % (2 * n);
                    if e < n { want[e] = v } else { want[e - n] = (t - v) % t }
                }
                assert_eq!(g, &want, "g={} w={w}", key.g);
            }
            let bound = fresh + keyswitch_bound(&params, w);
            assert!(noise <= bound, "noise {noise} above {bound} (g={}, w={w})", key.g);
        }
        // Smaller digits, smaller key-switching noise.
        assert!(keyswitch_bound(&params, 9) < keyswitch_bound(&params, 27) / 1000.0);
    }
    // A key of the wrong size or exponent is refused.
    let mut k = client.galois_keys(&[3], 27).unwrap().remove(0);
    k.b.pop();
    assert!(load_galois_key(&ring, &params, &k, 27).is_err());
}

/// The loaded Galois keys for packing `count` ciphertexts.
fn packing_keys(
    client: &Client,
    ring: &Ring<CpuBackend>,
    params: &Params,
    big_n: usize,
    count: usize,
    w: u32,
) -> Vec<ServerGaloisKey<CpuBackend>> {
    client
        .galois_keys(&packing_elements(big_n, count), w)
        .unwrap()
        .iter()
        .map(|k| load_galois_key(ring, params, k, w).unwrap())
        .collect()
}

/// `got` (the decryptions of `groups` packed ciphertexts) holds item `i` of group `g`'s
/// coefficient `r count` at `r count + i`: each group's `count` messages of `msgs`, strided.
fn assert_packed(got: &[Vec<u64>], msgs: &[Vec<u64>], count: usize, groups: usize) {
    assert_eq!(got.len(), groups);
    for g in 0..groups {
        assert_eq!(got[g].len(), msgs[g * count].len(), "every coefficient decrypted");
        for r in 0..got[g].len() / count {
            for i in 0..count {
                assert_eq!(
                    got[g][r * count + i],
                    msgs[g * count + i][r * count],
                    "group {g} item {i} row {r}"
                );
            }
        }
    }
}

#[test]
fn packing_keeps_exactly_the_strided_coefficients() {
    let mut rng = StdRng::seed_from_u64(6);
    let params = params();
    let (big_n, t) = (params.n(), 1u64 << params.plain_bits());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let w = 14;
    for (count, groups) in [(8usize, 1usize), (4, 3), (1, 2)] {
        let keys = packing_keys(&client, &ring, &params, big_n, count, w);
        // Every coefficient random: the ones off the stride are garbage that must vanish.
        let msgs = small_msgs(&mut rng, count * groups, big_n, t);
        let cts = encrypt(&client, &ring, &msgs);
        let (_, fresh) = decrypt_all(&client, &ring, &cts);
        let packed = pack_strided(&ring, &params, cts, count, &keys).unwrap();
        assert_eq!(packed.len(), groups);
        let (got, noise) = decrypt_all(&client, &ring, &packed);
        assert_packed(&got, &msgs, count, groups);
        let bound = fresh + (count as f64 - 1.0) * keyswitch_bound(&params, w);
        assert!(noise <= bound.max(fresh), "noise {noise} above {bound}");
    }
    // Missing keys and bad counts are errors.
    let cts = encrypt(&client, &ring, &small_msgs(&mut rng, 4, big_n, t));
    assert!(pack_strided(&ring, &params, cts, 4, &[]).is_err());
    let cts = encrypt(&client, &ring, &small_msgs(&mut rng, 3, big_n, t));
    assert!(pack_strided(&ring, &params, cts, 4, &[]).is_err());
}

/// The packing tree cut into subtrees (every batch size from 2 up, one that holds a whole
/// group, one that holds several) gives the level-ordered result word for word, and decrypts to
/// the strided coefficients.
#[test]
fn packing_in_subtrees_equals_packing_level_by_level() {
    let mut rng = StdRng::seed_from_u64(16);
    // Gadget keys (the composed levels) and hybrid keys (the fused levels of
    // `Ring::pack_step_hybrid`, and the composed one for many groups of two).
    for (params, w) in [(params(), 14u32), (hybrid_params(), 31)] {
        let (big_n, t) = (params.n(), 1u64 << params.plain_bits());
        let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
        let client = Client::new(params.clone()).unwrap();
        for (count, groups) in [(16usize, 2usize), (8, 3), (32, 1)] {
            let keys = packing_keys(&client, &ring, &params, big_n, count, w);
            let msgs = small_msgs(&mut rng, count * groups, big_n, t);
            let cts = encrypt(&client, &ring, &msgs);
            let words =
                |c: &Ciphertexts<CpuBackend>| (ring.download(&c.c0).unwrap(), ring.download(&c.c1).unwrap());
            let whole =
                pack_strided_in(&ring, &params, cts.duplicate(&ring).unwrap(), count, &keys, count * groups)
                    .unwrap();
            let (got, _) = decrypt_all(&client, &ring, &whole);
            assert_packed(&got, &msgs, count, groups);
            for batch in [2, 3, 4, 5, 8, count, count + 1, 2 * count] {
                let cut = pack_strided_in(&ring, &params, cts.duplicate(&ring).unwrap(), count, &keys, batch)
                    .unwrap();
                assert_eq!(cut.len(), groups);
                assert!(words(&cut) == words(&whole), "{groups} groups of {count} in batches of {batch}");
                // Gathered from a source that holds only the first `count - 3` items of each group
                // (its c0s and c1s in one buffer, as the blocked server's products): the same words
                // as packing the items padded with zero ciphertexts.
                let held = count.saturating_sub(3).max(1);
                let mut padded = Ciphertexts::zeros(&ring, count * groups, cts.limbs()).unwrap();
                let mut rows =
                    ring.zeros(fastquery_backend::Shape::new(2 * held * groups, cts.limbs())).unwrap();
                for g in 0..groups {
                    padded.copy_from(&ring, &cts, g * count, g * count, held).unwrap();
                    ring.copy_polys(&cts.c0, g * count, &mut rows, 2 * g * held, held).unwrap();
                    ring.copy_polys(&cts.c1, g * count, &mut rows, (2 * g + 1) * held, held).unwrap();
                }
                let want = pack_strided_in(&ring, &params, padded, count, &keys, batch).unwrap();
                let mut gather = |dst: &mut Ciphertexts<CpuBackend>, at: usize, first: usize, len: usize| {
                    let (g, i) = (first / count, first % count);
                    let here = held.saturating_sub(i).min(len);
                    if here > 0 {
                        ring.copy_polys(&rows, 2 * g * held + i, &mut dst.c0, at, here)?;
                        ring.copy_polys(&rows, (2 * g + 1) * held + i, &mut dst.c1, at, here)?;
                    }
                    Ok(())
                };
                let got = pack_strided_gathered(
                    &ring,
                    &params,
                    (count * groups, cts.limbs()),
                    count,
                    &keys,
                    batch,
                    &mut gather,
                )
                .unwrap();
                assert!(
                    words(&got) == words(&want),
                    "gathered: {groups} groups of {count} in batches of {batch}"
                );
            }
        }
        // A batch below two cannot hold a pair.
        let cts = encrypt(&client, &ring, &small_msgs(&mut rng, 4, big_n, t));
        assert!(pack_strided_in(&ring, &params, cts, 4, &[], 1).is_err());
    }
}

#[test]
fn expansion_yields_one_selection_ciphertext_per_coefficient() {
    let mut rng = StdRng::seed_from_u64(7);
    let params = params();
    let (big_n, t) = (params.n(), 1u64 << params.plain_bits());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let w = 14u32;
    let keys = expansion_keys(&client, &ring, 4, w);
    // A one-hot selection vector and a general one, over 2^k slots of either parity (the
    // level buffers alternate, and only the last level's is full-size).
    for (k, sel) in [(3u32, 3usize), (3, usize::MAX), (4, 11), (2, usize::MAX), (1, 1), (0, 0)] {
        let mut m = vec![0u64; big_n];
        for (i, x) in m.iter_mut().enumerate().take(1 << k) {
            *x = if sel == usize::MAX { rng.random_range(0..5) } else { u64::from(i == sel) };
        }
        let ct = encrypt(&client, &ring, std::slice::from_ref(&m));
        let out = expand(&ring, &params, ct, k, &keys).unwrap();
        assert_eq!(out.len(), 1 << k);
        let (got, _) = decrypt_all(&client, &ring, &out);
        for (i, g) in got.iter().enumerate() {
            assert_eq!(g[0], (m[i] << k) % t, "selection {i}");
            assert!(g[1..].iter().all(|&v| v == 0), "ciphertext {i} has other coefficients");
        }
    }
}

#[test]
fn slot_layouts_are_injective_and_skip_what_they_claim() {
    for k in 0..12u32 {
        for used in (1..=1usize << k).step_by(((1usize << k) / 7).max(1)).chain([1 << k]) {
            let l = SlotLayout::new(k, used).unwrap();
            let mut seen = std::collections::HashSet::new();
            for s in 0..used {
                let p = l.position(s);
                assert!(p < 1 << k && seen.insert(p), "k={k} used={used} slot {s} at {p}");
            }
            assert!(l.key_switches() < (1 << k));
            // Level j splits exactly the classes mod 2^j that hold a used slot, and no layout
            // can have fewer: a class holds 2^(k - j) positions.
            for j in 0..k {
                let classes: std::collections::HashSet<usize> =
                    (0..used).map(|s| l.position(s) % (1 << j)).collect();
                assert_eq!(l.split(j), classes.len(), "k={k} used={used} level {j}");
                assert_eq!(l.split(j), used.div_ceil(1 << (k - j)), "k={k} used={used} level {j}");
            }
        }
    }
    // Eight llama-7b tokens of 205 slots: 1,643 key switches instead of 2,047 (1,666 with the
    // layout of 2026-11-30, whose levels below a split every class).
    assert_eq!(SlotLayout::new(11, 1640).unwrap().key_switches(), 1643);
    // One token of 165 slots in 2^13: 174 instead of 286.
    assert_eq!(SlotLayout::new(13, 165).unwrap().key_switches(), 174);
    assert!(SlotLayout::new(3, 0).is_err() && SlotLayout::new(3, 9).is_err());
}

/// The coefficients a query sends are exactly those of the classes mod `2^k` its slots use,
/// ascending; the expansion's last level holds every used slot and at most `2^k` ciphertexts.
#[test]
fn sent_coefficients_are_the_used_classes() {
    let mut rng = StdRng::seed_from_u64(12);
    for k in 0..12u32 {
        for _ in 0..20 {
            let used = rng.random_range(1..=1usize << k);
            let l = SlotLayout::new(k, used).unwrap();
            let n = 1usize << (k + rng.random_range(0..3));
            let sent = l.sent(n);
            assert_eq!(sent.len(), l.sent_len(n), "{l:?}");
            let classes: std::collections::HashSet<usize> = (0..used).map(|s| l.position(s)).collect();
            let want: Vec<usize> = (0..n).filter(|j| classes.contains(&(j % (1 << k)))).collect();
            assert_eq!(sent, want, "{l:?} n={n}");
            assert!(l.expanded() >= used && l.expanded() <= 1 << k, "{l:?}");
        }
    }
    // Eight llama-7b tokens of 165 slots expanded into 2^13 = N: 1,326 key switches (1,324 into
    // 2^11; 1,450 and 1,354 with the layout of 2026-11-30), 1,320 ciphertexts at the last level,
    // 1,320 of the 8,192 coefficients sent (5,280).
    let deep = SlotLayout::new(13, 1320).unwrap();
    assert_eq!((deep.key_switches(), deep.expanded(), deep.sent_len(8192)), (1326, 1320, 1320));
    let shallow = SlotLayout::new(11, 1320).unwrap();
    assert_eq!((shallow.key_switches(), shallow.sent_len(8192)), (1324, 5280));
}

/// A query whose `c0` arrives only at [`SlotLayout::sent`] (anything elsewhere: here random
/// words) expands to the same slots as the whole query, for an expansion into `N` slots (only
/// the used positions sent) and into `N/4` (their classes); random words at a sent coefficient
/// that holds no slot do reach a slot.
#[test]
fn a_query_sent_in_part_selects_every_slot() {
    let mut rng = StdRng::seed_from_u64(31);
    let params = params();
    let (big_n, limbs, t) = (params.n(), params.limbs(), 1u64 << params.plain_bits());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let moduli: Vec<u32> = params.ring().moduli().iter().map(|m| m.value()).collect();
    for (k, used) in [(big_n.ilog2(), 40usize), (big_n.ilog2() - 2, 40)] {
        let keys = expansion_keys(&client, &ring, k, 14);
        let layout = SlotLayout::new(k, used).unwrap();
        let vals: Vec<i64> = (0..used).map(|_| rng.random_range(-3..4)).collect();
        let sparse: Vec<(usize, i64)> =
            vals.iter().enumerate().map(|(s, &v)| (layout.position(s), v)).collect();
        let sent = layout.sent(big_n);
        assert_eq!(sent.len(), used * (big_n >> k));
        let mut query = client.encrypt_sparse(&[sparse]).unwrap().remove(0);
        let whole = query.c0.clone();
        let (_, fresh) =
            decrypt_all(&client, &ring, &load_ciphertexts(&ring, &params, &[query.clone()]).unwrap());
        for j in (0..big_n).filter(|j| sent.binary_search(j).is_err()) {
            for (l, &q) in moduli.iter().enumerate().take(limbs) {
                query.c0[l * big_n + j] = rng.random_range(0..q);
            }
        }
        assert_ne!(query.c0, whole);
        let out = expand_slots(
            &ring,
            &params,
            load_ciphertexts(&ring, &params, &[query.clone()]).unwrap(),
            layout,
            &keys,
        )
        .unwrap();
        assert_eq!(out.len(), used);
        let (got, noise) = decrypt_all(&client, &ring, &out);
        for (s, g) in got.iter().enumerate() {
            let want = ((vals[s].rem_euclid(t as i64) as u64) << k) % t;
            assert_eq!(g[0], want, "k={k} slot {s}");
            assert!(g[1..].iter().all(|&v| v == 0), "k={k} slot {s} has other coefficients");
        }
        let slots = f64::from(1u32 << k);
        assert!(noise <= slots * fresh + (slots - 1.0) * keyswitch_bound(&params, 14), "k={k} noise {noise}");
        // The control: random words at a sent coefficient that is no slot's position.
        if let Some(&j) = sent.iter().find(|&&j| j >= 1 << k) {
            query.c0[j] = (query.c0[j] + moduli[0] / 2) % moduli[0];
            let out = expand_slots(
                &ring,
                &params,
                load_ciphertexts(&ring, &params, &[query]).unwrap(),
                layout,
                &keys,
            )
            .unwrap();
            let (got, _) = decrypt_all(&client, &ring, &out);
            assert!(got.iter().any(|g| g[1..].iter().any(|&v| v != 0)), "k={k}: a sent word was not read");
        }
    }
}

#[test]
fn pruned_expansion_selects_every_used_slot() {
    let mut rng = StdRng::seed_from_u64(8);
    let params = params();
    let (big_n, t) = (params.n(), 1u64 << params.plain_bits());
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let (k, w) = (5u32, 14u32);
    let keys = expansion_keys(&client, &ring, k, w);
    // 25 of 32 slots: 1, 2, 4, 7 and 13 ciphertexts split by the five levels, 27 of 31.
    let layout = SlotLayout::new(k, 25).unwrap();
    assert_eq!(layout.key_switches(), 27, "{layout:?}");
    let vals: Vec<u64> = (0..25).map(|_| rng.random_range(0..5)).collect();
    let mut m = vec![0u64; big_n];
    for (s, &v) in vals.iter().enumerate() {
        m[layout.position(s)] = v;
    }
    let ct = encrypt(&client, &ring, std::slice::from_ref(&m));
    let out = expand_slots(&ring, &params, ct, layout, &keys).unwrap();
    assert_eq!(out.len(), 25);
    let (got, _) = decrypt_all(&client, &ring, &out);
    for (s, g) in got.iter().enumerate() {
        assert_eq!(g[0], (vals[s] << k) % t, "slot {s}");
        assert!(g[1..].iter().all(|&v| v == 0), "slot {s} has other coefficients");
    }
}

/// The expansion in the NTT domain (hybrid keys, the CPU's fused steps, pruned layouts and a
/// full one, one and two threads) gives the transforms of the coefficient-form expansion's
/// ciphertexts, word for word; with gadget keys it must take the coefficient expansion and
/// transform it (the NTT-domain step refuses keys without a special prime, so a wrong
/// dispatch fails here).
#[test]
fn ntt_expansion_matches_the_coefficient_expansion() {
    let mut rng = StdRng::seed_from_u64(21);
    for (params, w) in [(hybrid_params(), 31u32), (params(), 14)] {
        let big_n = params.n();
        let client = Client::new(params.clone()).unwrap();
        for threads in [1, 2] {
            let ring = Ring::new(Arc::new(CpuBackend::with_threads(threads).unwrap()), params.ring().clone())
                .unwrap();
            for (k, used) in [(5u32, 25usize), (4, 16), (0, 1)] {
                let keys = expansion_keys(&client, &ring, k, w);
                let layout = SlotLayout::new(k, used).unwrap();
                let mut m = vec![0u64; big_n];
                for s in 0..used {
                    m[layout.position(s)] = rng.random_range(0..7);
                }
                let ct = encrypt(&client, &ring, std::slice::from_ref(&m));
                let want = expand_positioned(&ring, &params, ct.duplicate(&ring).unwrap(), layout, &keys)
                    .unwrap()
                    .forward(&ring)
                    .unwrap();
                let got = expand_positioned_ntt(&ring, &params, ct, layout, &keys).unwrap();
                assert_eq!(ring.download(&got.c0).unwrap(), ring.download(&want.c0).unwrap(), "k={k} w={w}");
                assert_eq!(ring.download(&got.c1).unwrap(), ring.download(&want.c1).unwrap(), "k={k} w={w}");
            }
        }
    }
}

fn fold_params() -> Arc<Params> {
    Arc::new(
        Params::new(ParamSpec {
            n: 4096,
            prime_bits: vec![31, 31, 31],
            response_limbs: 3,
            plain_bits: 16,
            flood_bits: 40,
            special_bits: 0,
        })
        .unwrap(),
    )
}

#[test]
fn rgsw_built_from_expanded_slots_selects_and_rotates_within_the_bound() {
    let mut rng = StdRng::seed_from_u64(11);
    // The gadget key switch with 8-bit RGSW digits, the hybrid one with 16-bit digits, and
    // 31-bit RGSW digits (one per limb: the CMux levels take their differences' twins).
    for (params, ks, rb) in [(fold_params(), 16u32, 8u32), (hybrid_params(), 31, 16), (fold_params(), 8, 31)]
    {
        let (n, t) = (params.n(), 1u64 << params.plain_bits());
        let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
        let client = Client::new(params.clone()).unwrap();
        let g = params.limbs() * gadget(&params, rb).1;
        for bits in [[false, true], [true, false], [true, true]] {
            // One query ciphertext holding RLWE(b g_e) for every gadget element of both bits.
            let slots = bits.len() * g;
            let k = slots.next_power_of_two().trailing_zeros();
            let msg: Vec<(usize, Vec<u32>)> =
                (0..slots).map(|s| (s, gadget_slot(&params, k, rb, s % g, bits[s / g]).unwrap())).collect();
            let ct = load_ciphertexts(&ring, &params, &client.encrypt_raw(&[msg]).unwrap()).unwrap();
            let keys = expansion_keys(&client, &ring, k, ks);
            let square = load_galois_key(&ring, &params, &client.square_key(ks), ks).unwrap();
            let expanded = expand(&ring, &params, ct, k, &keys).unwrap();
            let rgsw = rgsw_from_rows(&ring, &params, expanded.slice(&ring, 0, slots).unwrap(), &square, rb)
                .unwrap();
            assert_eq!(rgsw.len(), 2);

            // Two CMux levels over four ciphertexts pick item 2 b0 + b1.
            let msgs = small_msgs(&mut rng, 4, n, t);
            let cts = encrypt(&client, &ring, &msgs);
            let (_, fresh) = decrypt_all(&client, &ring, &cts);
            let level = cmux_halves(&ring, cts.forward(&ring).unwrap(), &rgsw[0]).unwrap();
            let level = cmux_halves(&ring, level, &rgsw[1]).unwrap();
            let (got, noise) = decrypt_all(&client, &ring, &level.inverse(&ring).unwrap());
            let want = 2 * usize::from(bits[0]) + usize::from(bits[1]);
            assert_eq!(got, vec![msgs[want].clone()], "bits {bits:?}");
            let shape = FoldShape { k, m1: 0, w_max: 0, ks_bits: ks, rgsw_bits: rb, levels: 2 };
            let bound = fold_noise(&params, shape).total + fresh;
            assert!(noise < bound, "noise 2^{:.1} above the bound 2^{:.1}", noise.log2(), bound.log2());

            // A CMux rotation multiplies by X^-shift exactly when the bit is set.
            let shift = 1000;
            let cts = encrypt(&client, &ring, &msgs[..1]);
            let rotated = cmux_rotate(&ring, &params, cts.forward(&ring).unwrap(), shift, &rgsw[1]).unwrap();
            let (got, _) = decrypt_all(&client, &ring, &rotated.inverse(&ring).unwrap());
            let expect: Vec<u64> = (0..n)
                .map(|j| match (bits[1], j + shift < n) {
                    (false, _) => msgs[0][j],
                    (true, true) => msgs[0][j + shift],
                    (true, false) => (t - msgs[0][j + shift - n]) % t,
                })
                .collect();
            assert_eq!(got[0], expect, "rotation with bit {}", bits[1]);
        }
    }
}

#[test]
fn malformed_rgsw_inputs_are_refused() {
    let params = fold_params();
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let square = load_galois_key(&ring, &params, &client.square_key(16), 16).unwrap();
    // Rows that are not a whole number of gadget vectors.
    let rows = Ciphertexts::zeros(&ring, 5, params.limbs()).unwrap();
    assert!(rgsw_from_rows(&ring, &params, rows, &square, 8).is_err());
    // A Galois key is not the key for s^2.
    let galois = load_galois_key(&ring, &params, &client.galois_keys(&[3], 16).unwrap()[0], 16).unwrap();
    let g = params.limbs() * gadget(&params, 8).1;
    let rows = Ciphertexts::zeros(&ring, g, params.limbs()).unwrap();
    assert!(rgsw_from_rows(&ring, &params, rows, &galois, 8).is_err());
    // Messages with unreduced or missing residues.
    assert!(client.encrypt_raw(&[vec![(0, vec![u32::MAX; 3])]]).is_err());
    assert!(client.encrypt_raw(&[vec![(0, vec![1; 2])]]).is_err());
    assert!(client.encrypt_raw(&[vec![(4096, vec![1; 3])]]).is_err());
}

#[test]
fn hybrid_key_switching_decrypts_within_its_bound_and_far_below_the_gadget_one() {
    let mut rng = StdRng::seed_from_u64(21);
    let params = hybrid_params();
    let (n, t) = (params.n(), 1u64 << params.plain_bits());
    assert_eq!(params.key_limbs(), params.limbs() + 1);
    let special = params.special_prime().unwrap();
    assert!(params.moduli().iter().all(|m| m.value() != special));
    let ring = Ring::new(Arc::new(CpuBackend::new()), params.ring().clone()).unwrap();
    let client = Client::new(params.clone()).unwrap();
    let w = fastquery_he::galois::HYBRID_DIGIT_BITS;
    // Automorphisms: the right plaintext, noise inside the hybrid bound.
    let gs = [3usize, n + 1, 2 * n - 1, 2 * rng.random_range(0..n) + 1];
    let msgs = small_msgs(&mut rng, 3, n, t);
    let cts = encrypt(&client, &ring, &msgs);
    let (_, fresh) = decrypt_all(&client, &ring, &cts);
    let mut worst = 0f64;
    for key in client.galois_keys(&gs, w).unwrap() {
        // One polynomial per limb of the chain, each over the chain and the special prime.
        assert_eq!(key.b.len(), params.limbs() * params.key_limbs() * n);
        let sk = load_galois_key(&ring, &params, &key, w).unwrap();
        let (got, noise) = decrypt_all(&client, &ring, &automorphism(&ring, &cts, &sk).unwrap());
        for (m, g) in msgs.iter().zip(&got) {
            let mut want = vec![0u64; n];
            for (j, &v) in m.iter().enumerate() {
                let e = j * key.g % (2 * n);
                if e < n { want[e] = v } else { want[e - n] = (t - v) % t }
            }
            assert_eq!(g, &want, "g={}", key.g);
        }
        worst = worst.max(noise);
    }
    let bound = fresh + keyswitch_bound(&params, w);
    assert!(worst <= bound, "noise {worst} above {bound}");
    // The key's error is divided by P: about a modulus switch's rounding, where the gadget
    // key switch with 16-bit digits on the same chain adds 2^16 times more.
    let gadget_params = Params::new(ParamSpec { special_bits: 0, ..params.spec().clone() }).unwrap();
    assert!(keyswitch_bound(&params, w) < 2f64.powi(14));
    assert!(keyswitch_bound(&params, w) * 2f64.powi(12) < keyswitch_bound(&gadget_params, 16));

    // Packing and expansion on hybrid keys.
    let keys = packing_keys(&client, &ring, &params, n, 4, w);
    let msgs = small_msgs(&mut rng, 4, n, t);
    let packed = pack_strided(&ring, &params, encrypt(&client, &ring, &msgs), 4, &keys).unwrap();
    let (got, noise) = decrypt_all(&client, &ring, &packed);
    for r in 0..n / 4 {
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(got[0][r * 4 + i], m[r * 4], "item {i} row {r}");
        }
    }
    assert!(noise <= fresh + 3.0 * keyswitch_bound(&params, w), "packing noise {noise}");
    let k = 4u32;
    let keys = expansion_keys(&client, &ring, k, w);
    let layout = SlotLayout::new(k, 13).unwrap();
    let vals: Vec<u64> = (0..13).map(|_| rng.random_range(0..5)).collect();
    let mut m = vec![0u64; n];
    for (s, &v) in vals.iter().enumerate() {
        m[layout.position(s)] = v;
    }
    let out = expand_slots(&ring, &params, encrypt(&client, &ring, std::slice::from_ref(&m)), layout, &keys)
        .unwrap();
    let (got, noise) = decrypt_all(&client, &ring, &out);
    for (s, g) in got.iter().enumerate() {
        assert_eq!(g[0], (vals[s] << k) % t, "slot {s}");
        assert!(g[1..].iter().all(|&v| v == 0), "slot {s} has other coefficients");
    }
    let slots = f64::from(1u32 << k);
    let bound = slots * fresh + (slots - 1.0) * keyswitch_bound(&params, w);
    assert!(noise <= bound, "expansion noise {noise} above {bound}");

    // A gadget-sized key for hybrid parameters, and a hybrid key for the chain alone, are
    // refused.
    let mut short = client.galois_keys(&[3], w).unwrap().remove(0);
    short.b.truncate(params.limbs() * params.limbs() * n);
    assert!(load_galois_key(&ring, &params, &short, w).is_err());
}
