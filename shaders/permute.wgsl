// Galois automorphisms (a signed gather within every row) and the gadget decomposition of
// key switching, so that packing never leaves the device. Layouts are the backend's
// ([poly][limb][coefficient]); see Backend::gather_signed and Backend::decompose.

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> moduli: array<u32>;
// The gather table (N entries, bit 31: negate); unused by decompose.
@group(0) @binding(3) var<storage, read> idx: array<u32>;
// gather: total = rows * N, a = stride, limbs = the shape's limbs.
// decompose: total = output words, a = stride, b = digit bits, c = digits, d = digit mask,
// limbs = the limbs decomposed.
@group(0) @binding(4) var<uniform> prm: Params;

const NEGATE: u32 = 0x80000000u;

@compute @workgroup_size(256)
fn gather_signed_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        let row = i >> prm.log_n;
        let k = i & (prm.n - 1u);
        let g = idx[k];
        let v = src[(row << prm.log_n) + (g & ~NEGATE)];
        out[i] = select(v, neg_mod(v, moduli[row % prm.limbs]), (g & NEGATE) != 0u);
    }
}

// Output word i is coefficient k of limb l of digit j of source row r, ordered
// [r][j][l][k]: the j-th digit of src[r][k], reduced mod p_l.
@compute @workgroup_size(256)
fn decompose_u32(@builtin(global_invocation_id) gid: vec3<u32>) {
    for (var i = gid.x; i < prm.total; i += prm.a) {
        let k = i & (prm.n - 1u);
        var rest = i >> prm.log_n;
        let l = rest % prm.limbs;
        rest = rest / prm.limbs;
        let j = rest % prm.c;
        let r = rest / prm.c;
        let v = src[(r << prm.log_n) + k];
        let shift = j * prm.b;
        var d = 0u;
        if shift < 32u {
            d = (v >> shift) & prm.d;
        }
        let p = moduli[l];
        out[i] = select(d, d % p, d >= p);
    }
}
