//! The GGUF reader on the real SmolLM2-135M-Instruct file (workloads.md). scripts/test.sh
//! installs it and sets FASTQUERY_SMOLLM2, which makes this test required; elsewhere it says
//! on stderr that it was skipped.

use std::io::Write;

use fastquery_table::load::load_table;

#[test]
fn reads_the_real_smollm2_token_embedding() {
    let Some(path) = std::env::var_os("FASTQUERY_SMOLLM2") else {
        let _ =
            writeln!(std::io::stderr(), "SKIPPED: FASTQUERY_SMOLLM2 not set (scripts/install_smollm2.sh)");
        return;
    };
    let t = load_table(std::path::Path::new(&path), None).expect("the installed GGUF loads");
    assert_eq!((t.m(), t.d()), (49152, 576));
    let n = t.data().len() as f64;
    let mean_abs = t.data().iter().map(|x| f64::from(x.abs())).sum::<f64>() / n;
    let rms = (t.data().iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / n).sqrt();
    // An embedding table: small, finite, not constant, no row all zero.
    assert!(t.data().iter().all(|x| x.is_finite()));
    assert!((1e-3..1.0).contains(&mean_abs) && rms > mean_abs, "mean |x| {mean_abs}, rms {rms}");
    assert!((0..t.m()).step_by(997).all(|k| t.row(k).iter().any(|&x| x != 0.0)));
    // Rows differ from each other (a wrong stride or block layout would repeat or smear them).
    assert_ne!(t.row(0), t.row(1));
    // Other tensors of the file are reachable by name, and a wrong name is a clear error.
    assert!(load_table(std::path::Path::new(&path), Some("output_norm.weight")).is_err()); // one dimension
    let e = load_table(std::path::Path::new(&path), Some("nope")).unwrap_err().to_string();
    assert!(e.contains("token_embd.weight"), "{e}");
}
