//! `FASTQUERY_KEYSWITCH` (the A/B switch between the gadget and hybrid key switch of the
//! folded designs): a server's design input ([`KeySwitching::from_env`]), which restricts the
//! candidates to its kind; a value that is not one of them is an error that names the
//! variable. `FASTQUERY_MAX_SHARED` and `FASTQUERY_SESSION_TOKENS` likewise. Its own test binary: it sets the process's environment, which no other test here
//! reads concurrently.

use fastquery_cpu::CpuBackend;
use fastquery_protocol::{
    fold::{self, KeySwitching},
    harness::DesignInputs,
};
use fastquery_table::IntTable;

#[test]
fn the_switch_restricts_the_candidates_and_refuses_other_values() {
    let shape = (700usize, 24usize, 5u32);
    let kinds = |value: &str| {
        // SAFETY: this binary's only test; nothing else reads the environment meanwhile.
        unsafe { std::env::set_var("FASTQUERY_KEYSWITCH", value) };
        let keyswitch = KeySwitching::from_env().unwrap();
        let hybrid: Vec<bool> = fold::candidates(4, "fastquery", shape, 37, 3, keyswitch.into())
            .iter()
            .map(|c| c.0.params.special_prime().is_some())
            .collect();
        (hybrid.iter().any(|&h| h), hybrid.iter().any(|&h| !h))
    };
    assert_eq!(kinds("gadget"), (false, true));
    assert_eq!(kinds("hybrid"), (true, false));
    assert_eq!(kinds("any"), (true, true));
    let (m, d, bits) = shape;
    let table = IntTable::new(m, d, vec![0; m * d], bits, vec![1.0; d], vec![0; d]).unwrap();
    let inputs = || DesignInputs::for_backend(&CpuBackend::new(), &table, 37, 3);
    unsafe { std::env::set_var("FASTQUERY_KEYSWITCH", "special") };
    let e = inputs().unwrap_err().to_string();
    assert!(e.contains("FASTQUERY_KEYSWITCH=special"), "{e}");
    unsafe { std::env::set_var("FASTQUERY_KEYSWITCH", "gadget") };
    assert_eq!(inputs().unwrap().keyswitch, KeySwitching::Gadget);
    unsafe { std::env::remove_var("FASTQUERY_KEYSWITCH") };
    assert_eq!(inputs().unwrap().keyswitch, KeySwitching::Any);
    // Every code round-trips; others are none.
    for k in [KeySwitching::Any, KeySwitching::Gadget, KeySwitching::Hybrid] {
        assert_eq!(KeySwitching::from_code(k.code()), Some(k));
    }
    assert_eq!(KeySwitching::from_code(3), None);
    // FASTQUERY_MAX_SHARED: a design input too, 1 to 16, 16 where unset.
    for bad in ["0", "17", "four"] {
        unsafe { std::env::set_var("FASTQUERY_MAX_SHARED", bad) };
        let e = inputs().unwrap_err().to_string();
        assert!(e.contains(&format!("FASTQUERY_MAX_SHARED={bad}")), "{e}");
    }
    unsafe { std::env::set_var("FASTQUERY_MAX_SHARED", "2") };
    assert_eq!(inputs().unwrap().max_shared, 2);
    unsafe { std::env::remove_var("FASTQUERY_MAX_SHARED") };
    assert_eq!(inputs().unwrap().max_shared, fold::MAX_SHARED);
    // FASTQUERY_SESSION_TOKENS: 1 to u32::MAX tokens, none where unset.
    for bad in ["0", "-3", "4294967296", "long"] {
        unsafe { std::env::set_var("FASTQUERY_SESSION_TOKENS", bad) };
        let e = inputs().unwrap_err().to_string();
        assert!(e.contains(&format!("FASTQUERY_SESSION_TOKENS={bad}")), "{e}");
    }
    unsafe { std::env::set_var("FASTQUERY_SESSION_TOKENS", "300") };
    assert_eq!(inputs().unwrap().session_tokens, Some(300));
    assert_eq!(inputs().unwrap().allowed().session_tokens, Some(300));
    // FASTQUERY_DECODE_TOKENS: a number of at most the session's tokens, and only with one.
    unsafe { std::env::set_var("FASTQUERY_DECODE_TOKENS", "100") };
    assert_eq!(inputs().unwrap().allowed().decode_tokens, 100);
    unsafe { std::env::set_var("FASTQUERY_DECODE_TOKENS", "301") };
    assert!(inputs().unwrap_err().to_string().contains("301 decode tokens in a session of 300"));
    unsafe { std::env::set_var("FASTQUERY_DECODE_TOKENS", "half") };
    assert!(inputs().unwrap_err().to_string().contains("FASTQUERY_DECODE_TOKENS=half"));
    unsafe { std::env::set_var("FASTQUERY_DECODE_TOKENS", "1") };
    unsafe { std::env::remove_var("FASTQUERY_SESSION_TOKENS") };
    assert!(inputs().unwrap_err().to_string().contains("without a session"));
    unsafe { std::env::remove_var("FASTQUERY_DECODE_TOKENS") };
    assert_eq!(inputs().unwrap().session_tokens, None);
}
