// Elementwise kernels over buffers laid out [poly][limb][coefficient], grid-stride loops over
// `total` words (params.a = stride in invocations). The limb of word i is (i >> log_n) % limbs.

@group(0) @binding(0) var<storage, read_write> x: array<u32>;
@group(0) @binding(1) var<storage, read> y: array<u32>;
@group(0) @binding(2) var<storage, read> moduli: array<u32>;
@group(0) @binding(3) var<uniform> prm: Params;
// Per limb: Barrett constants floor(2^64 / p) as (low, high) for mul; for scalar_mul the
// scalar and its Shoup companion.
@group(0) @binding(4) var<storage, read> aux: array<vec2<u32>>;

fn limb_of(i: u32) -> u32 {
    return (i >> prm.log_n) % prm.limbs;
}

@compute @workgroup_size(256)
fn add_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        x[i] = add_mod(x[i], y[i], moduli[limb_of(i)]);
    }
}

@compute @workgroup_size(256)
fn sub_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        x[i] = sub_mod(x[i], y[i], moduli[limb_of(i)]);
    }
}

// x = y[b..] - y[c..] (params.b, params.c: word offsets of whole polynomials into y, so word i
// of either range is in limb limb_of(i)): a fold level's B - A in one pass.
@compute @workgroup_size(256)
fn difference_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        x[i] = sub_mod(y[prm.b + i], y[prm.c + i], moduli[limb_of(i)]);
    }
}

@compute @workgroup_size(256)
fn mul_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        let l = limb_of(i);
        x[i] = reduce64(mul_wide(x[i], y[i]), aux[l], moduli[l]);
    }
}

// out = in * X^k (0 <= k < 2N, params.b = k), negacyclic; x is the output, y a copy of the input.
@compute @workgroup_size(256)
fn monomial_mul_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = prm.n;
    for (var i = gid.x; i < prm.total; i += prm.a) {
        let row = i >> prm.log_n;
        let j = i & (n - 1u);
        let e = (j + prm.b) % (2u * n);
        let v = y[i];
        if e < n {
            x[(row << prm.log_n) + e] = v;
        } else {
            x[(row << prm.log_n) + e - n] = neg_mod(v, moduli[row % prm.limbs]);
        }
    }
}
