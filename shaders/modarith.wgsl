// Modular arithmetic on the engine's word with 32-bit integers only (runs on any WebGPU
// adapter): primes p < 2^31, every value fully reduced. A fully reduced result is unique, so
// these give the CPU backend's words whatever reduction they use.

// Every kernel's scalar arguments: the ring's degree and limb count, the number of work items,
// and eight kernel-specific words.
struct Params {
    n: u32,
    log_n: u32,
    limbs: u32,
    total: u32,
    a: u32,
    b: u32,
    c: u32,
    d: u32,
    e: u32,
    f: u32,
    g: u32,
    h: u32,
}

fn add_mod(a: u32, b: u32, p: u32) -> u32 {
    let s = a + b;
    return select(s, s - p, s >= p);
}

fn sub_mod(a: u32, b: u32, p: u32) -> u32 {
    return select(a + p - b, a - b, a >= b);
}

fn neg_mod(a: u32, p: u32) -> u32 {
    return select(p - a, 0u, a == 0u);
}

// The full 64-bit product of two words as (low, high), from 16-bit halves.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (p00 & 0xffffu) | (mid << 16u);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

// a * w mod p for a fixed w with ws = floor(w * 2^32 / p) (Shoup); any a < 2^32.
fn mul_shoup(a: u32, w: u32, ws: u32, p: u32) -> u32 {
    let q = mul_wide(a, ws).y;
    let r = a * w - q * p;
    return select(r, r - p, r >= p);
}

// x mod p for a 64-bit x = (low, high), with mu = floor(2^64 / p) as (low, high). The quotient
// estimate floor(x * mu / 2^64) is at most one too small, so x - q p < 2p < 2^32: only the low
// word of q is needed, and the low words of x and q p give the remainder.
fn reduce64(x: vec2<u32>, mu: vec2<u32>, p: u32) -> u32 {
    let p0 = mul_wide(x.x, mu.x);
    let p1 = mul_wide(x.x, mu.y);
    let p2 = mul_wide(x.y, mu.x);
    let p3 = x.y * mu.y;
    let t = p0.y + p1.x;
    let t2 = t + p2.x;
    let carry = select(0u, 1u, t < p0.y) + select(0u, 1u, t2 < t);
    let q = p3 + p1.y + p2.y + carry;
    let r = x.x - q * p;
    return select(r, r - p, r >= p);
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}
