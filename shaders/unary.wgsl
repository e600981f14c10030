// Elementwise kernels with one operand (negation, multiplication by a per-limb scalar), laid out
// and strided like elementwise.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<u32>;
@group(0) @binding(1) var<storage, read> moduli: array<u32>;
@group(0) @binding(2) var<uniform> prm: Params;
// Per limb (scalar, Shoup companion); unused by neg.
@group(0) @binding(3) var<storage, read> scalars: array<vec2<u32>>;

fn limb_of(i: u32) -> u32 {
    return (i >> prm.log_n) % prm.limbs;
}

@compute @workgroup_size(256)
fn neg_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        x[i] = neg_mod(x[i], moduli[limb_of(i)]);
    }
}

@compute @workgroup_size(256)
fn scalar_mul_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        let l = limb_of(i);
        let s = scalars[l];
        x[i] = mul_shoup(x[i], s.x, s.y, moduli[l]);
    }
}
