//! Phase timings of the server path, printed to stderr when `FASTQUERY_TRACE` is set (`sync`:
//! each phase waits for the device's queued work before it ends; see [`Phases::waiting_on`]) (a
//! diagnostic for operators and for performance work; silent otherwise), each with the
//! process's resident memory at its end and the page faults the process took during it, where
//! the system reports them (Linux: a fresh page costs a fault and a kernel zeroing, which a
//! phase's time alone does not show); and gathered by
//! [`collect`] for the harness's reports (`fastquery session` prints each phase's median).

use std::cell::RefCell;
use std::time::Instant;

thread_local! {
    /// The phases ended on this thread inside [`collect`] (name, ms; summed by name), or None
    /// outside it.
    static COLLECTED: RefCell<Option<Vec<(&'static str, f64)>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, with its result, the phases that the server paths it ran on this
/// thread ended: each phase's total ms, in the order phases first ended (a server answers on
/// the calling thread; its parallel work inside a phase is timed by the phase's wall clock).
/// Inside an outer `collect`, the phases also count for the outer one.
pub(crate) fn collect<R>(f: impl FnOnce() -> R) -> (R, Vec<(&'static str, f64)>) {
    let outer = COLLECTED.with_borrow_mut(|c| c.replace(Vec::new()));
    let result = f();
    let got = COLLECTED.with_borrow_mut(|c| std::mem::replace(c, outer)).unwrap_or_default();
    if !got.is_empty() {
        COLLECTED.with_borrow_mut(|c| {
            if let Some(outer) = c {
                got.iter().for_each(|&(name, ms)| add(outer, name, ms));
            }
        });
    }
    (result, got)
}

/// `ms` added to phase `name` of `phases` (appended where it is new).
fn add(phases: &mut Vec<(&'static str, f64)>, name: &'static str, ms: f64) {
    match phases.iter_mut().find(|(n, _)| *n == name) {
        Some((_, total)) => *total += ms,
        None => phases.push((name, ms)),
    }
}

/// Times consecutive phases of one operation. A phase marked several times (one per chunk of
/// a loop) is reported once: its total, how many times, and the memory at its last end.
pub(crate) struct Phases {
    what: &'static str,
    /// Printed when dropped (`FASTQUERY_TRACE`).
    on: bool,
    /// Handed to [`collect`] as each phase ends (created inside one).
    collecting: bool,
    last: Instant,
    /// With `FASTQUERY_TRACE=sync`: waits for the backend's device before each phase ends, so
    /// that a phase's time includes the device work it queued (an accelerator runs it
    /// asynchronously, and without the wait it counts where the host next waits). The waits cost
    /// the overlap of host and device work: a diagnostic, not the served speed.
    wait: Option<Box<dyn Fn()>>,
    /// With `FASTQUERY_TRACE=sync` on a backend that times its kernels
    /// (`FASTQUERY_CUDA_PROFILE=1`): its device milliseconds so far, read at each phase's end.
    device_ms: Option<Box<dyn Fn() -> Option<f64>>>,
    /// The device's milliseconds when the current phase began.
    device_at: Option<f64>,
    /// Steps of the current phase handed to [`Self::steps`], reported with it.
    pending_steps: Vec<(&'static str, f64)>,
    /// `FASTQUERY_TRACE=sync` (read with `on`): [`Self::waiting_on`] sets `wait`.
    sync: bool,
    /// The process's minor page faults when the current phase began.
    faults: Option<u64>,
    parts: Vec<Part>,
}

struct Part {
    name: &'static str,
    ms: f64,
    times: usize,
    rss: Option<u64>,
    /// Minor page faults during the phase (all its parts), where reported.
    faults: Option<u64>,
    /// Device time of the kernels the phase ran (all its parts), where timed.
    device_ms: Option<f64>,
    /// Named steps within the phase ([`Phases::steps`]), summed over its parts.
    steps: Vec<(&'static str, f64)>,
}

impl Phases {
    pub(crate) fn new(what: &'static str) -> Self {
        let trace = std::env::var_os("FASTQUERY_TRACE");
        let on = trace.is_some();
        Self {
            what,
            on,
            sync: trace.is_some_and(|v| v == "sync"),
            collecting: COLLECTED.with_borrow(Option::is_some),
            last: Instant::now(),
            wait: None,
            device_ms: None,
            device_at: None,
            pending_steps: Vec::new(),
            faults: if on { minor_faults() } else { None },
            parts: Vec::new(),
        }
    }

    /// These phases, each ended after `backend`'s device finished the work queued so far, where
    /// `FASTQUERY_TRACE=sync` (otherwise unchanged).
    pub(crate) fn waiting_on<B: fastquery_backend::Backend>(mut self, backend: &std::sync::Arc<B>) -> Self {
        if self.sync {
            let b = backend.clone();
            self.wait = Some(Box::new(move || {
                // A failed wait shows up as the next operation's error; the trace only times.
                let _ = b.synchronize();
            }));
            let b = backend.clone();
            if let Ok(Some(at)) = b.kernel_ms_so_far() {
                self.device_at = Some(at);
                self.device_ms = Some(Box::new(move || b.kernel_ms_so_far().ok().flatten()));
            }
        }
        self
    }

    /// Names steps within the current phase and their milliseconds (a finish's host steps):
    /// printed after the phase when it ends.
    pub(crate) fn steps(&mut self, steps: &[(&'static str, f64)]) {
        if self.on {
            for &(name, ms) in steps {
                add(&mut self.pending_steps, name, ms);
            }
        }
    }

    /// Ends the current phase.
    pub(crate) fn mark(&mut self, name: &'static str) {
        if !self.on && !self.collecting {
            return;
        }
        if let Some(wait) = &self.wait {
            wait();
        }
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
        let device = self.device_ms.as_ref().and_then(|read| read());
        let device_ms = device.zip(self.device_at).map(|(now, then)| now - then);
        if device.is_some() {
            self.device_at = device;
        }
        if self.collecting {
            COLLECTED.with_borrow_mut(|c| {
                if let Some(c) = c {
                    add(c, name, ms);
                }
            });
        }
        if self.on {
            let rss = resident_bytes();
            let now_faults = minor_faults();
            let faults = now_faults.zip(self.faults).map(|(now, then)| now.saturating_sub(then));
            self.faults = now_faults;
            match self.parts.iter_mut().find(|p| p.name == name) {
                Some(p) => {
                    (p.ms, p.times, p.rss) = (p.ms + ms, p.times + 1, rss);
                    p.faults = p.faults.zip(faults).map(|(a, b)| a + b);
                    p.device_ms = p.device_ms.zip(device_ms).map(|(a, b)| a + b);
                    for (name, ms) in std::mem::take(&mut self.pending_steps) {
                        add(&mut p.steps, name, ms);
                    }
                }
                None => {
                    let steps = std::mem::take(&mut self.pending_steps);
                    self.parts.push(Part { name, ms, times: 1, rss, faults, device_ms, steps });
                }
            }
        }
    }

    /// `what: phase ms (RSS), ...`, in the order the phases first ended.
    fn render(&self) -> String {
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| {
                let times = if p.times > 1 { format!(" in {} parts", p.times) } else { String::new() };
                let mut notes = Vec::new();
                notes.extend(p.device_ms.map(|d| format!("device {d:.2} ms")));
                notes.extend(p.rss.map(|b| format!("RSS {:.2} GB", b as f64 / 1e9)));
                notes.extend(p.faults.map(|f| format!("{f} faults")));
                let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join(", ")) };
                let steps: Vec<String> = p.steps.iter().map(|(s, ms)| format!("{s} {ms:.2}")).collect();
                let steps =
                    if steps.is_empty() { String::new() } else { format!(" [{} ms]", steps.join(", ")) };
                format!("{} {:.1} ms{times}{notes}{steps}", p.name, p.ms)
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

/// The process's minor page faults so far (`minflt`, the tenth field of `/proc/self/stat`),
/// where the system reports them.
fn minor_faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) start with the third, `state`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(7)?.parse().ok()
}

/// Times consecutive host steps of a phase for [`Phases::steps`]: each lap is the time since
/// the clock started or since its last lap.
pub(crate) struct StepClock(Instant);

impl StepClock {
    pub(crate) fn start() -> Self {
        Self(Instant::now())
    }

    /// Reports the step `name` as ending now.
    pub(crate) fn lap(&mut self, trace: &mut Phases, name: &'static str) {
        let now = Instant::now();
        trace.steps(&[(name, (now - self.0).as_secs_f64() * 1e3)]);
        self.0 = now;
    }
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
        // The notes in parentheses hold commas of their own.
        let mut bare = String::new();
        let mut depth = 0;
        for ch in text[3..].chars() {
            match ch {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => bare.push(ch),
                _ => {}
            }
        }
        let names: Vec<&str> = bare.split(", ").map(|part| part.split(' ').next().unwrap_or("")).collect();
        assert_eq!(names, ["decode", "mac", "pack", "finish"], "{text}");
        assert!(text.contains("mac ") && text.matches(" in 2 parts").count() == 2, "{text}");
        let mac = &p.parts[1];
        assert_eq!((mac.name, mac.times), ("mac", 2));
        assert!(mac.ms >= 4.0, "{text}");
        p.on = false; // nothing printed by the test
    }

    /// Steps handed to a phase are reported with it (summed over its parts, in the order they
    /// were first named) and not with the next phase; without the trace nothing is kept.
    #[test]
    fn steps_are_reported_with_their_phase() {
        let mut p = super::Phases::new("x");
        p.on = true;
        p.mark("decode");
        p.steps(&[("noise", 0.5), ("responses", 1.0)]);
        p.mark("finish");
        p.steps(&[("noise", 0.25), ("encode", 2.0)]);
        p.mark("finish");
        p.mark("after");
        let text = p.render();
        assert!(
            text.contains("finish ") && text.contains("[noise 0.75, responses 1.00, encode 2.00 ms]"),
            "{text}"
        );
        assert_eq!(text.matches('[').count(), 1, "only the finish has steps: {text}");
        p.on = false; // nothing printed by the test
        p.steps(&[("ignored", 1.0)]);
        assert!(p.pending_steps.is_empty());
    }

    /// Inside `collect`, phases are gathered by name (summed, in the order they first ended)
    /// without the trace variable, and count for an outer `collect` too; outside, nothing is
    /// gathered.
    #[test]
    fn collected_phases_are_summed_by_name() {
        use super::{Phases, collect};
        let pause = || std::thread::sleep(std::time::Duration::from_millis(2));
        let ((), outside) = collect(|| ());
        assert!(outside.is_empty());
        let (inner, outer) = collect(|| {
            let mut p = Phases::new("x");
            p.on = false;
            pause();
            p.mark("a");
            let ((), inner) = collect(|| {
                let mut q = Phases::new("y");
                q.on = false;
                pause();
                q.mark("b");
                pause();
                q.mark("a");
            });
            pause();
            p.mark("a");
            inner
        });
        let names = |v: &[(&'static str, f64)]| v.iter().map(|(n, _)| *n).collect::<Vec<&str>>();
        assert_eq!(names(&inner), ["b", "a"]);
        assert_eq!(names(&outer), ["a", "b"]);
        assert!(inner.iter().all(|&(_, ms)| ms >= 2.0), "{inner:?}");
        // The outer "a": its own two phases and the inner one.
        let a = |v: &[(&str, f64)]| v.iter().find(|(n, _)| *n == "a").map(|&(_, ms)| ms).unwrap_or(0.0);
        assert!(a(&outer) >= a(&inner) + 4.0, "{outer:?} {inner:?}");
        let mut p = Phases::new("z");
        p.on = false;
        p.mark("c");
        assert!(p.parts.is_empty() && !p.collecting);
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

    /// Where the system reports them, writing fresh pages counts faults: at least one per
    /// 2 MiB (a huge page faults in 512 pages at once). 64 MiB is above the largest threshold
    /// from which glibc maps an allocation afresh, so the pages are new whatever the other
    /// tests freed.
    #[test]
    fn minor_faults_count_fresh_pages() {
        let Some(before) = super::minor_faults() else {
            assert_ne!(std::env::consts::OS, "linux", "Linux reports minflt");
            return;
        };
        let pages = 16384;
        let mut fresh: Vec<u8> = Vec::with_capacity(pages * 4096);
        // Every byte written: each page's first write faults it in.
        fresh.extend((0..pages * 4096).map(|i| (i % 251) as u8));
        std::hint::black_box(&fresh);
        let after = super::minor_faults().expect("reported once");
        assert!(after - before >= (pages / 512) as u64, "{before} -> {after}");
        drop(fresh);
    }
}
