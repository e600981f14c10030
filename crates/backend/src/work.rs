//! Process-wide counters of the work [`Ring`](crate::Ring)s ask of their backends: key switches,
//! transforms, coefficient products. Diagnostics for reports (the bench prints them per token
//! beside the design's own operation counts, and they give the GPU floors their operation
//! side); they cost one or two relaxed atomic adds per ring operation and change no result.
//!
//! The counters are global, so a difference of two [`snapshot`]s counts what every thread did in
//! between: take them around work that nothing else in the process overlaps.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Work counted between two [`snapshot`]s (or since the process started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Work {
    /// Ciphertexts key-switched ([`Ring::decompose_mac`](crate::Ring::decompose_mac) polynomials,
    /// [`Ring::expand_step`](crate::Ring::expand_step) ciphertexts; an external product counts
    /// two).
    pub key_switches: u64,
    /// Transforms of one limb of degree N inside them (each digit row, reduced mod every output
    /// prime).
    pub key_switch_transforms: u64,
    /// Other transforms of one limb ([`Ring::forward`](crate::Ring::forward),
    /// [`Ring::inverse`](crate::Ring::inverse), the two inverse transforms of each expansion step).
    pub transforms: u64,
    /// Coefficient products of [`Ring::mac`](crate::Ring::mac).
    pub mac_products: u64,
    /// Kernel launches, counted by an accelerator backend (0 on the CPU): with the time, what a
    /// launch-bound path costs per launch.
    pub launches: u64,
    /// Device allocations an accelerator backend made.
    pub allocations: u64,
    /// Times the host waited for the device (downloads and explicit synchronisations).
    pub waits: u64,
    /// Bytes copied between host and device, both ways.
    pub bus_bytes: u64,
}

impl std::ops::Add for Work {
    type Output = Work;
    fn add(self, o: Work) -> Work {
        Work {
            key_switches: self.key_switches + o.key_switches,
            key_switch_transforms: self.key_switch_transforms + o.key_switch_transforms,
            transforms: self.transforms + o.transforms,
            mac_products: self.mac_products + o.mac_products,
            launches: self.launches + o.launches,
            allocations: self.allocations + o.allocations,
            waits: self.waits + o.waits,
            bus_bytes: self.bus_bytes + o.bus_bytes,
        }
    }
}

impl std::ops::Sub for Work {
    type Output = Work;
    fn sub(self, o: Work) -> Work {
        Work {
            key_switches: self.key_switches - o.key_switches,
            key_switch_transforms: self.key_switch_transforms - o.key_switch_transforms,
            transforms: self.transforms - o.transforms,
            mac_products: self.mac_products - o.mac_products,
            launches: self.launches - o.launches,
            allocations: self.allocations - o.allocations,
            waits: self.waits - o.waits,
            bus_bytes: self.bus_bytes - o.bus_bytes,
        }
    }
}

static KEY_SWITCHES: AtomicU64 = AtomicU64::new(0);
static KEY_SWITCH_TRANSFORMS: AtomicU64 = AtomicU64::new(0);
static TRANSFORMS: AtomicU64 = AtomicU64::new(0);
static MAC_PRODUCTS: AtomicU64 = AtomicU64::new(0);
static LAUNCHES: AtomicU64 = AtomicU64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static WAITS: AtomicU64 = AtomicU64::new(0);
static BUS_BYTES: AtomicU64 = AtomicU64::new(0);

/// The counters now.
pub fn snapshot() -> Work {
    Work {
        key_switches: KEY_SWITCHES.load(Relaxed),
        key_switch_transforms: KEY_SWITCH_TRANSFORMS.load(Relaxed),
        transforms: TRANSFORMS.load(Relaxed),
        mac_products: MAC_PRODUCTS.load(Relaxed),
        launches: LAUNCHES.load(Relaxed),
        allocations: ALLOCATIONS.load(Relaxed),
        waits: WAITS.load(Relaxed),
        bus_bytes: BUS_BYTES.load(Relaxed),
    }
}

fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Relaxed);
}

pub(crate) fn key_switches(cts: usize, transforms: usize) {
    add(&KEY_SWITCHES, cts);
    add(&KEY_SWITCH_TRANSFORMS, transforms);
}

pub(crate) fn transforms(rows: usize) {
    add(&TRANSFORMS, rows);
}

pub(crate) fn mac_products(products: usize) {
    add(&MAC_PRODUCTS, products);
}

/// For accelerator backends: one kernel launch.
pub fn launch() {
    add(&LAUNCHES, 1);
}

/// For accelerator backends: one device allocation.
pub fn allocation() {
    add(&ALLOCATIONS, 1);
}

/// For accelerator backends: the host waited for the device.
pub fn wait() {
    add(&WAITS, 1);
}

/// For accelerator backends: `bytes` copied between host and device.
pub fn bus(bytes: usize) {
    add(&BUS_BYTES, bytes);
}

/// Device time of one kernel over a stretch of work ([`crate::Backend::kernel_times`]): how
/// often it was launched and its launches' time on the device together.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub launches: u64,
    pub ms: f64,
}
