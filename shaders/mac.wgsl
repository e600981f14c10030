// The server's hot loop: out[r][c] (+)= sum_i a[r][i] * b[i][c], pointwise in the NTT domain.
// One invocation per (limb, coefficient) of one column c and one tile of MAC_ROWS rows: each
// word of b is read once for all rows of the tile. Products accumulate in 64 bits (two words)
// and are reduced every `lazy` terms, like the CPU backend, so the final words are its words.
//
// Dispatch: (ceil(limbs * N / 64), columns of this chunk, ceil(rows / MAC_ROWS)).

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> moduli: array<u32>;
// Per limb: floor(2^64 / p) as (low, high).
@group(0) @binding(4) var<storage, read> barrett: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read> lazy: array<u32>;
// total = limbs * N, a = rows, b = inner, c = cols, d = accumulate, e = first column.
@group(0) @binding(6) var<uniform> prm: Params;

const MAC_ROWS: u32 = 8u;

@compute @workgroup_size(64)
fn mac_ntt_u32(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lc = gid.x;
    let poly = prm.total;
    if lc >= poly {
        return;
    }
    let limb = lc >> prm.log_n;
    let c = wid.y + prm.e;
    let r0 = wid.z * MAC_ROWS;
    let rows = prm.a;
    let inner = prm.b;
    let cols = prm.c;
    let rt = min(MAC_ROWS, rows - r0);
    let p = moduli[limb];
    let mu = barrett[limb];
    let lz = lazy[limb];
    var acc: array<vec2<u32>, 8>;
    for (var t = 0u; t < rt; t++) {
        acc[t] = vec2<u32>(0u, 0u);
        if prm.d != 0u {
            acc[t].x = out[((r0 + t) * cols + c) * poly + lc];
        }
    }
    var count = 0u;
    for (var i = 0u; i < inner; i++) {
        let y = b[(i * cols + c) * poly + lc];
        for (var t = 0u; t < rt; t++) {
            acc[t] = add64(acc[t], mul_wide(a[((r0 + t) * inner + i) * poly + lc], y));
        }
        count += 1u;
        if count == lz {
            for (var t = 0u; t < rt; t++) {
                acc[t] = vec2<u32>(reduce64(acc[t], mu, p), 0u);
            }
            count = 0u;
        }
    }
    for (var t = 0u; t < rt; t++) {
        out[((r0 + t) * cols + c) * poly + lc] = reduce64(acc[t], mu, p);
    }
}
