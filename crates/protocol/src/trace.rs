//! Phase timings of the server path, printed to stderr when `FASTQUERY_TRACE` is set (a
//! diagnostic for operators and for performance work; silent otherwise).

use std::time::Instant;

/// Times consecutive phases of one operation.
pub(crate) struct Phases {
    what: &'static str,
    on: bool,
    last: Instant,
    parts: Vec<(&'static str, f64)>,
}

impl Phases {
    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            on: std::env::var_os("FASTQUERY_TRACE").is_some(),
            last: Instant::now(),
            parts: Vec::new(),
        }
    }

    /// Ends the current phase.
    pub(crate) fn mark(&mut self, name: &'static str) {
        if self.on {
            let now = Instant::now();
            self.parts.push((name, (now - self.last).as_secs_f64() * 1e3));
            self.last = now;
        }
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if self.on {
            let parts: Vec<String> = self.parts.iter().map(|(n, ms)| format!("{n} {ms:.1} ms")).collect();
            eprintln!("[trace] {}: {}", self.what, parts.join(", "));
        }
    }
}
