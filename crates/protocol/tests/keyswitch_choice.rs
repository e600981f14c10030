//! `FASTQUERY_KEYSWITCH` (the A/B switch between the gadget and hybrid key switch of the
//! folded designs): each value restricts the candidates to its kind, and a value that is not
//! one of them is an error that names the variable. Its own test binary: it sets the
//! process's environment, which no other test here reads concurrently.

use fastquery_protocol::{fastquery, fold};

#[test]
fn the_switch_restricts_the_candidates_and_refuses_other_values() {
    let shape = (700usize, 24usize, 5u32);
    let kinds = |value: &str| {
        // SAFETY: this binary's only test; nothing else reads the environment meanwhile.
        unsafe { std::env::set_var("FASTQUERY_KEYSWITCH", value) };
        let hybrid: Vec<bool> = fold::candidates(4, "fastquery", shape, 37, 3)
            .iter()
            .map(|c| c.0.params.special_prime().is_some())
            .collect();
        (hybrid.iter().any(|&h| h), hybrid.iter().any(|&h| !h))
    };
    assert_eq!(kinds("gadget"), (false, true));
    assert_eq!(kinds("hybrid"), (true, false));
    assert_eq!(kinds("any"), (true, true));
    unsafe { std::env::set_var("FASTQUERY_KEYSWITCH", "special") };
    let e = fastquery::choose_any(shape.0, shape.1, shape.2, 37, 3).unwrap_err().to_string();
    assert!(e.contains("FASTQUERY_KEYSWITCH=special"), "{e}");
    assert!(fold::candidates(4, "fastquery", shape, 37, 3).is_empty());
    unsafe { std::env::remove_var("FASTQUERY_KEYSWITCH") };
    assert!(fastquery::choose_any(shape.0, shape.1, shape.2, 37, 3).is_ok());
}
