//! Phase timings of the server path, printed to stderr when `FASTQUERY_TRACE` is set (a
//! diagnostic for operators and for performance work; silent otherwise), each with the
//! process's resident memory at its end where the system reports it (Linux).

use std::time::Instant;

/// Times consecutive phases of one operation. A phase marked several times (one per chunk of
/// a loop) is reported once: its total, how many times, and the memory at its last end.
pub(crate) struct Phases {
    what: &'static str,
    on: bool,
    last: Instant,
    parts: Vec<Part>,
}

struct Part {
    name: &'static str,
    ms: f64,
    times: usize,
    rss: Option<u64>,
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
            let (ms, rss) = ((now - self.last).as_secs_f64() * 1e3, resident_bytes());
            match self.parts.iter_mut().find(|p| p.name == name) {
                Some(p) => (p.ms, p.times, p.rss) = (p.ms + ms, p.times + 1, rss),
                None => self.parts.push(Part { name, ms, times: 1, rss }),
            }
            self.last = now;
        }
    }

    /// `what: phase ms (RSS), ...`, in the order the phases first ended.
    fn render(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| {
                let times = if p.times > 1 { format!(" in {} parts", p.times) } else { String::new() };
                let rss = p.rss.map(|b| format!(" (RSS {:.2} GB)", b as f64 / 1e9)).unwrap_or_default();
                format!("{} {:.1} ms{times}{rss}", p.name, p.ms)
            })
            .collect();
        format!("{}: {}", self.what, parts.join(", "))
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if self.on {
            eprintln!("[trace] {}", self.render());
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
    /// A phase ended several times is reported once, with its total and count, in the order
    /// phases first ended.
    #[test]
    fn repeated_phases_are_summed() {
        let mut p = super::Phases::new("x");
        p.on = true;
        for name in ["decode", "mac", "pack", "mac", "pack", "finish"] {
            std::thread::sleep(std::time::Duration::from_millis(2));
            p.mark(name);
        }
        let text = p.render();
        let names: Vec<&str> =
            text[3..].split(", ").map(|part| part.split(' ').next().unwrap_or("")).collect();
        assert_eq!(names, ["decode", "mac", "pack", "finish"], "{text}");
        assert!(text.contains("mac ") && text.matches(" in 2 parts").count() == 2, "{text}");
        let mac = &p.parts[1];
        assert_eq!((mac.name, mac.times), ("mac", 2));
        assert!(mac.ms >= 4.0, "{text}");
        p.on = false; // nothing printed by the test
    }

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
