//! Phase timings of the server path, printed to stderr when `FASTQUERY_TRACE` is set (a
//! diagnostic for operators and for performance work; silent otherwise), each with the
//! process's resident memory at its end where the system reports it (Linux).

use std::time::Instant;

/// Times consecutive phases of one operation.
pub(crate) struct Phases {
    what: &'static str,
    on: bool,
    last: Instant,
    parts: Vec<(&'static str, f64, Option<u64>)>,
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
            self.parts.push((name, (now - self.last).as_secs_f64() * 1e3, resident_bytes()));
            self.last = now;
        }
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if self.on {
            let parts: Vec<String> = self
                .parts
                .iter()
                .map(|(n, ms, rss)| match rss {
                    Some(b) => format!("{n} {ms:.1} ms (RSS {:.2} GB)", *b as f64 / 1e9),
                    None => format!("{n} {ms:.1} ms"),
                })
                .collect();
            eprintln!("[trace] {}: {}", self.what, parts.join(", "));
        }
    }
}

/// The process's resident memory in bytes (`VmRSS` of `/proc/self/status`), where the system
/// reports it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim();
    kb.parse::<u64>().ok().map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    /// Where the system reports it, the resident memory is at least what this test holds.
    #[test]
    fn resident_memory_counts_what_is_held() {
        let held = std::hint::black_box(vec![1u8; 64 << 20]);
        match super::resident_bytes() {
            Some(rss) => {
                assert!(rss >= held.len() as u64, "{rss} bytes resident while holding {}", held.len())
            }
            None => assert_ne!(std::env::consts::OS, "linux", "Linux reports VmRSS"),
        }
        drop(held);
    }
}
