//! Decoding under random, truncated, oversized and mismatched input: typed errors, no panics.

use std::sync::{Arc, OnceLock};

use fastquery_cpu::CpuBackend;
use fastquery_he::share::Sharing;
use fastquery_protocol::{
    SchemeClient, SchemeServer,
    cheetah::{self, CheetahClient, CheetahServer},
};
use fastquery_table::IntTable;
use proptest::prelude::*;

struct Fixture {
    server: CheetahServer<CpuBackend>,
    session: u64,
    setup: Vec<u8>,
    query: Vec<u8>,
    response: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let values: Vec<i32> = (0..200 * 10).map(|i| (i % 251) - 125).collect();
        let table = IntTable::new(200, 10, values, 9, vec![1.0; 10], vec![0; 10]).unwrap();
        let server = cheetah::server(Arc::new(CpuBackend::new()), &table, 37).unwrap();
        let mut client = cheetah::client(200, 10, 9, 37).unwrap();
        let setup = client.setup().unwrap();
        let session = server.open_session(&setup).unwrap();
        let query = client.query(&[7]).unwrap();
        let (response, _) = server.answer(session, &query).unwrap();
        Fixture { server, session, setup, query, response }
    })
}

fn fresh_client() -> CheetahClient {
    let mut c = cheetah::client(200, 10, 9, 37).unwrap();
    c.setup().unwrap();
    c.query(&[7]).unwrap();
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let f = fixture();
        prop_assert!(f.server.open_session(&bytes).is_err());
        prop_assert!(f.server.answer(f.session, &bytes).is_err());
        prop_assert!(fresh_client().decode(&bytes).is_err());
    }

    #[test]
    fn truncations_are_rejected(cut in 0usize..1_000_000) {
        let f = fixture();
        for msg in [&f.setup, &f.query, &f.response] {
            let cut = cut % msg.len();
            let t = &msg[..cut];
            prop_assert!(f.server.open_session(t).is_err());
            prop_assert!(f.server.answer(f.session, t).is_err());
            prop_assert!(fresh_client().decode(t).is_err());
        }
    }

    #[test]
    fn corrupted_headers_and_lengths_are_rejected(pos in 0usize..14, val in any::<u8>(), extra in 1usize..64) {
        let f = fixture();
        let mut q = f.query.clone();
        if q[pos] != val {
            q[pos] = val;
            prop_assert!(f.server.answer(f.session, &q).is_err());
        }
        let mut long = f.query.clone();
        long.extend(std::iter::repeat_n(0u8, extra));
        prop_assert!(f.server.answer(f.session, &long).is_err());
        let mut r = f.response.clone();
        r.extend(std::iter::repeat_n(0xffu8, extra));
        prop_assert!(fresh_client().decode(&r).is_err());
    }

    /// Flipped body bits either decode (to some other valid message) or fail: never a panic.
    #[test]
    fn flipped_body_bits_never_panic(bit in 0usize..100_000) {
        let f = fixture();
        let mut q = f.query.clone();
        let i = 14 + (bit / 8) % (q.len() - 14);
        q[i] ^= 1 << (bit % 8);
        let _ = f.server.answer(f.session, &q);
        let mut r = f.response.clone();
        let i = 14 + (bit / 8) % (r.len() - 14);
        r[i] ^= 1 << (bit % 8);
        let _ = fresh_client().decode(&r);
    }
}

#[test]
fn a_huge_announced_length_is_refused_before_allocation() {
    let f = fixture();
    let mut q = f.query.clone();
    q[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(f.server.answer(f.session, &q).is_err());
    // A token count far above the limit, in a well-formed header.
    let mut q = f.query.clone();
    q[14..18].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(f.server.answer(f.session, &q).is_err());
    // The server still answers the valid query afterwards.
    assert!(f.server.answer(f.session, &f.query).is_ok());
}

/// A kept `c0` value is at most `round((q' - 1) / 2^b)`, in as many bits as that needs: the
/// largest is read back, one more is refused, for widths with and without dropped bits.
#[test]
fn kept_c0_values_above_the_largest_rounding_are_refused() {
    use fastquery_he::{
        client::{ResponseC1, ResponseCiphertext},
        rounding::c0_largest,
    };
    use fastquery_protocol::messages::{Limits, c0_width, decode_response, encode_response};
    let params = cheetah::params(37).unwrap();
    let q = params.response_modulus().unwrap();
    let c1 = vec![0u32; params.n() * params.response_limbs()];
    for b in [0u32, 1, 23, 40] {
        let largest = c0_largest(q, b);
        assert_eq!(c0_width(&params, b), 128 - largest.leading_zeros());
        let encode = |v: u128| {
            let ct = ResponseCiphertext { c1: ResponseC1::Residues(c1.clone()), c0: vec![3, v] };
            encode_response(&params, cheetah::SCHEME_ID, (b, 0), &[ct], Sharing::NONE).unwrap()
        };
        let read = |msg: &[u8]| {
            decode_response(&params, cheetah::SCHEME_ID, msg, (&[2], Sharing::NONE), Limits::default())
        };
        assert_eq!(read(&encode(largest)).unwrap().1[0].c0, vec![3, largest], "b={b}");
        if largest + 1 < 1u128 << c0_width(&params, b) {
            assert!(read(&encode(largest + 1)).is_err(), "b={b}");
        }
    }
}

/// A `c1` the finish rounded travels as the very bytes the encoder writes for its residues at
/// that width; one rounded to another width is lifted and rounded again; the client reads the
/// lift of the rounded values; a width the response modulus cannot hold is an error, not a
/// response.
#[test]
fn a_c1_rounded_once_encodes_as_the_encoder_would_round_it() {
    use fastquery_he::{
        client::{ResponseC1, ResponseCiphertext},
        rounding::response_rounding,
    };
    use fastquery_protocol::messages::{Limits, decode_response, encode_response};
    use rand::{Rng, SeedableRng};
    let params = cheetah::params(37).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let lr = params.response_limbs();
    let residues: Vec<u32> = params.moduli()[..lr]
        .iter()
        .flat_map(|m| (0..params.n()).map(|_| rng.random_range(0..m.value())).collect::<Vec<_>>())
        .collect();
    let bits = 40;
    let (basis, rounding) = response_rounding(&params, bits).unwrap();
    let values = rounding.round_residues(&basis, &residues);
    let c0 = vec![5u128, 9];
    let encode = |c1: ResponseC1, width: u32| {
        let ct = ResponseCiphertext { c1, c0: c0.clone() };
        encode_response(&params, cheetah::SCHEME_ID, (20, width), &[ct], Sharing::NONE)
    };
    let by_encoder = encode(ResponseC1::Residues(residues.clone()), bits).unwrap();
    let rounded = ResponseC1::Rounded { bits, values: values.clone() };
    assert_eq!(encode(rounded.clone(), bits).unwrap(), by_encoder);
    // What the client reads back is the lift of the rounded values, and the rounded c1's own
    // residues say the same.
    let (_, read) =
        decode_response(&params, cheetah::SCHEME_ID, &by_encoder, (&[2], Sharing::NONE), Limits::default())
            .unwrap();
    assert_eq!(read[0].c1.residues(&params).unwrap(), rounded.residues(&params).unwrap());
    assert_eq!(read[0].c0, c0);
    // At another width: the lift rounded again, which is not the residues rounded there.
    let (b2, r2) = response_rounding(&params, 30).unwrap();
    let again = encode(rounded.clone(), 30).unwrap();
    let lifted = rounded.residues(&params).unwrap();
    assert_eq!(again, encode(ResponseC1::Residues(lifted.into_owned()), 30).unwrap());
    assert_eq!(r2.round_residues(&b2, &rounded.residues(&params).unwrap()).len(), params.n());
    // Residues on the wire (width 0) from a rounded c1: its lift.
    let whole = encode(rounded.clone(), 0).unwrap();
    let (_, read) =
        decode_response(&params, cheetah::SCHEME_ID, &whole, (&[2], Sharing::NONE), Limits::default())
            .unwrap();
    assert_eq!(read[0].c1.residues(&params).unwrap(), rounded.residues(&params).unwrap());
    // Widths the response modulus cannot hold, a c1 of the wrong length in either form, and a
    // rounded value wider than its width: errors, not responses.
    assert!(encode(ResponseC1::Residues(residues.clone()), 65).is_err());
    assert!(encode(ResponseC1::Rounded { bits: 65, values: values.clone() }, 30).is_err());
    assert!(encode(ResponseC1::Residues(residues[1..].to_vec()), bits).is_err());
    assert!(encode(ResponseC1::Residues(residues[1..].to_vec()), 0).is_err());
    assert!(encode(ResponseC1::Rounded { bits, values: values[1..].to_vec() }, bits).is_err());
    let mut wide = values;
    wide[7] |= 1 << bits;
    assert!(encode(ResponseC1::Rounded { bits, values: wide }, bits).is_err());
}

/// A `c1` of `width` bits rounded by the finish (cheetah's two-limb response modulus, 64-bit
/// arithmetic, or bumblebee's three limbs, wider than a word) encodes to the bytes the encoder
/// writes from its residues, and the client reads back the lift of the rounded values.
fn rounded_c1_travels_as_its_residues_would(wide: bool, width: u32, seed: u64) {
    use fastquery_he::{
        client::{ResponseC1, ResponseCiphertext},
        rounding::response_rounding,
    };
    use fastquery_protocol::{
        bumblebee,
        messages::{Limits, decode_response, encode_response},
    };
    use rand::{Rng, SeedableRng};
    let (params, scheme) = if wide {
        (bumblebee::params(64).unwrap(), bumblebee::SCHEME_ID)
    } else {
        (cheetah::params(37).unwrap(), cheetah::SCHEME_ID)
    };
    let width = width.min(params.log2_q_response() as u32 - 1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let residues: Vec<u32> = params.moduli()[..params.response_limbs()]
        .iter()
        .flat_map(|m| (0..params.n()).map(|_| rng.random_range(0..m.value())).collect::<Vec<_>>())
        .collect();
    let (basis, rounding) = response_rounding(&params, width).unwrap();
    let rounded = ResponseC1::Rounded { bits: width, values: rounding.round_residues(&basis, &residues) };
    let encode = |c1: ResponseC1| {
        let ct = ResponseCiphertext { c1, c0: vec![1, 2, 3] };
        encode_response(&params, scheme, (20, width), &[ct], Sharing::NONE).unwrap()
    };
    let bytes = encode(rounded.clone());
    assert_eq!(bytes, encode(ResponseC1::Residues(residues)), "width {width}");
    let (_, read) =
        decode_response(&params, scheme, &bytes, (&[3], Sharing::NONE), Limits::default()).unwrap();
    assert_eq!(read[0].c1.residues(&params).unwrap(), rounded.residues(&params).unwrap(), "width {width}");
}

/// The widest rounding a response allows, 64 bits (bumblebee's 93-bit response modulus): its
/// values fill a word, and the encoder's width check must not shift them by 64.
#[test]
fn a_64_bit_rounded_c1_travels_as_its_residues_would() {
    rounded_c1_travels_as_its_residues_would(true, 64, 5);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// [`rounded_c1_travels_as_its_residues_would`] over random residues, every width the
    /// response modulus holds and both kinds of response modulus.
    #[test]
    fn a_rounded_c1_travels_as_its_residues_would(wide in any::<bool>(), width in 1u32..=64, seed in any::<u64>()) {
        rounded_c1_travels_as_its_residues_would(wide, width, seed);
    }
}
