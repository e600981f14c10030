// Modulus switching down (coefficient form): for each dropped prime p_last, last first,
// x <- (x - r) / p_last with r = x mod p_last centred into (-p_last/2, p_last/2]: the CPU
// backend's per-prime rounding. One invocation per (polynomial, coefficient).

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> inp: array<u32>;
@group(0) @binding(2) var<storage, read> moduli: array<u32>;
// (p_last^-1 mod p_i, Shoup companion) at last * ring_limbs + i.
@group(0) @binding(3) var<storage, read> ms: array<vec2<u32>>;
// total = polys * N, a = stride, b = in_limbs, c = out_limbs (>= 1), limbs = the ring's.
@group(0) @binding(4) var<uniform> prm: Params;

const MAX_LIMBS: u32 = 32u;

@compute @workgroup_size(256)
fn mod_switch_down_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var idx = gid.x; idx < prm.total; idx += prm.a) {
        let poly = idx >> prm.log_n;
        let j = idx & (prm.n - 1u);
        var cur: array<u32, MAX_LIMBS>;
        for (var l = 0u; l < prm.b; l++) {
            cur[l] = inp[((poly * prm.b + l) << prm.log_n) + j];
        }
        for (var last = prm.b - 1u; last >= prm.c; last--) {
            let pl = moduli[last];
            let r = cur[last];
            for (var i = 0u; i < last; i++) {
                let p = moduli[i];
                let rc = select(r % p, neg_mod((pl - r) % p, p), r > pl / 2u);
                let m = ms[last * prm.limbs + i];
                cur[i] = mul_shoup(sub_mod(cur[i], rc, p), m.x, m.y, p);
            }
        }
        for (var l = 0u; l < prm.c; l++) {
            out[((poly * prm.c + l) << prm.log_n) + j] = cur[l];
        }
    }
}
