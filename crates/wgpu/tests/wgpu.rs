//! Every wgpu check: the shared backend conformance suite on the first adapter (lavapipe in
//! CI, which installs Mesa's Vulkan driver; a real GPU elsewhere), and every scheme end to end
//! with its server on that adapter. Without an adapter the tests print why they were skipped,
//! unless `FASTQUERY_REQUIRE_WGPU` is set (CI sets it), where a missing adapter fails.

use std::sync::Arc;

use fastquery_backend::BackendError;
use fastquery_wgpu::WgpuBackend;

fn backend() -> Result<WgpuBackend, BackendError> {
    let b = WgpuBackend::new();
    if let Err(e) = &b {
        assert!(std::env::var_os("FASTQUERY_REQUIRE_WGPU").is_none(), "FASTQUERY_REQUIRE_WGPU is set: {e}");
    }
    b
}

mod conformance {
    fastquery_backend::conformance_tests!(super::backend());
}

#[test]
fn adapter_is_described() {
    let Ok(b) = backend() else { return };
    let text = b.describe();
    assert!(!text.is_empty());
    if b.is_software() {
        assert!(text.contains("software"), "{text}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "wgpu adapter: {text}");
}

#[test]
fn every_scheme_end_to_end_on_wgpu() {
    let backend = match backend() {
        Ok(b) => Arc::new(b),
        Err(e) => {
            fastquery_backend::conformance::report_skip(&e);
            return;
        }
    };
    // Each scheme queried, answered, decoded and every share checked against the table.
    fastquery_protocol::harness::verify_every_scheme(backend).unwrap();
}
