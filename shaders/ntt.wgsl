// The canonical negacyclic NTT (fastquery-ntt): the butterflies, their order and the twiddle
// tables (psi^k at bit-reversed k, with Shoup companions, at limb * n + index) of
// fastquery_ntt::reference, so the output words are the CPU backend's.
//
// Two forms. `*_shared`: one workgroup per (polynomial, limb) row, the row in workgroup memory
// through all log2(N) stages (SN, the largest N this device's workgroup memory holds, is
// substituted when the module is built). `*_stage`: one butterfly per invocation over every
// row, one dispatch per stage, for rows larger than workgroup memory.

@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<storage, read> tw: array<u32>;
@group(0) @binding(2) var<storage, read> tw_shoup: array<u32>;
@group(0) @binding(3) var<storage, read> moduli: array<u32>;
// Per limb (N^-1, Shoup companion).
@group(0) @binding(4) var<storage, read> ninv: array<vec2<u32>>;
// total = rows * N / 2 butterflies, a = stride, b = log2(half) of the stage, c = first row.
@group(0) @binding(5) var<uniform> prm: Params;

const WG: u32 = 256u;

// Butterfly t of a `_stage` dispatch at stage log2(half) = lh: the pair's word indices, its
// twiddle index and its limb.
struct Butterfly {
    x: u32,
    y: u32,
    w: u32,
    limb: u32,
}

fn butterfly(t: u32, lh: u32) -> Butterfly {
    let row = t >> (prm.log_n - 1u);
    let k = t & ((prm.n >> 1u) - 1u);
    let limb = row % prm.limbs;
    let g = k >> lh;
    let x = row * prm.n + (g << (lh + 1u)) + (k & ((1u << lh) - 1u));
    return Butterfly(x, x + (1u << lh), limb * prm.n + (prm.n >> (lh + 1u)) + g, limb);
}

@compute @workgroup_size(256)
fn ntt_forward_stage(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var t = gid.x; t < prm.total; t += prm.a) {
        let f = butterfly(t, prm.b);
        let p = moduli[f.limb];
        let u = data[f.x];
        let v = mul_shoup(data[f.y], tw[f.w], tw_shoup[f.w], p);
        data[f.x] = add_mod(u, v, p);
        data[f.y] = sub_mod(u, v, p);
    }
}

@compute @workgroup_size(256)
fn ntt_inverse_stage(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var t = gid.x; t < prm.total; t += prm.a) {
        let f = butterfly(t, prm.b);
        let p = moduli[f.limb];
        let u = data[f.x];
        let v = data[f.y];
        data[f.x] = add_mod(u, v, p);
        data[f.y] = mul_shoup(sub_mod(u, v, p), tw[f.w], tw_shoup[f.w], p);
    }
}

// The inverse's final scaling by N^-1 (after the last `_stage` dispatch); total = words.
@compute @workgroup_size(256)
fn ntt_scale(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        let limb = (i >> prm.log_n) % prm.limbs;
        let s = ninv[limb];
        data[i] = mul_shoup(data[i], s.x, s.y, moduli[limb]);
    }
}

var<workgroup> s: array<u32, SN>;

@compute @workgroup_size(256)
fn ntt_forward_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = prm.n;
    let row = wid.x + prm.c;
    let limb = row % prm.limbs;
    let p = moduli[limb];
    let base = row * n;
    let tb = limb * n;
    for (var i = lid.x; i < n; i += WG) {
        s[i] = data[base + i];
    }
    workgroupBarrier();
    var lh = prm.log_n - 1u;
    for (var groups = 1u; groups < n; groups <<= 1u) {
        let half = 1u << lh;
        for (var k = lid.x; k < (n >> 1u); k += WG) {
            let g = k >> lh;
            let x = (g << (lh + 1u)) + (k & (half - 1u));
            let y = x + half;
            let u = s[x];
            let v = mul_shoup(s[y], tw[tb + groups + g], tw_shoup[tb + groups + g], p);
            s[x] = add_mod(u, v, p);
            s[y] = sub_mod(u, v, p);
        }
        workgroupBarrier();
        lh -= 1u;
    }
    for (var i = lid.x; i < n; i += WG) {
        data[base + i] = s[i];
    }
}

@compute @workgroup_size(256)
fn ntt_inverse_shared(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = prm.n;
    let row = wid.x + prm.c;
    let limb = row % prm.limbs;
    let p = moduli[limb];
    let base = row * n;
    let tb = limb * n;
    for (var i = lid.x; i < n; i += WG) {
        s[i] = data[base + i];
    }
    workgroupBarrier();
    var lh = 0u;
    for (var groups = n >> 1u; groups >= 1u; groups >>= 1u) {
        let half = 1u << lh;
        for (var k = lid.x; k < (n >> 1u); k += WG) {
            let g = k >> lh;
            let x = (g << (lh + 1u)) + (k & (half - 1u));
            let y = x + half;
            let u = s[x];
            let v = s[y];
            s[x] = add_mod(u, v, p);
            s[y] = mul_shoup(sub_mod(u, v, p), tw[tb + groups + g], tw_shoup[tb + groups + g], p);
        }
        workgroupBarrier();
        lh += 1u;
    }
    let sc = ninv[limb];
    for (var i = lid.x; i < n; i += WG) {
        data[base + i] = mul_shoup(s[i], sc.x, sc.y, p);
    }
}
