//! Table files: GGUF, safetensors and `.npy`, read into a real-valued [`Table`] (rows = tokens).
//!
//! * GGUF (v2 and v3): the tensor's dimensions are stored fastest first, so `[d, m]` is an `m x d`
//!   table with contiguous rows. Types F32, F16, BF16, and the block formats Q8_0
//!   (`x = d * q`), Q4_0 (`x = d * (q - 8)`) and Q4_1 (`x = d * q + m`), with 32 values per
//!   block, low nibbles first, dequantized exactly as ggml defines them.
//! * safetensors: F32, F16 and BF16, through the `safetensors` crate.
//! * `.npy` (versions 1 to 3): little-endian `f4`, `f2` or `f8`, C order, two dimensions.
//!
//! The whole file is read once. The table is then built from it, and the file's bytes are
//! dropped, so at most two copies exist at any time.

use std::path::Path;

use half::{bf16, f16};

use crate::{Table, TableError};

/// The token-embedding tensor's usual name in GGUF files.
pub const GGUF_TOKEN_EMBD: &str = "token_embd.weight";

/// Loads `tensor` (or the format's default: GGUF `token_embd.weight`, the only tensor of a
/// safetensors file with one, the array of an `.npy`) from `path`, by extension.
pub fn load_table(path: &Path, tensor: Option<&str>) -> Result<Table, TableError> {
    let shown = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| TableError::Io { path: shown.clone(), reason: e.to_string() })?;
    let fmt = |reason: String| TableError::Format { path: shown.clone(), reason };
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("gguf") => gguf(bytes, tensor.unwrap_or(GGUF_TOKEN_EMBD), &shown),
        Some("safetensors") => safetensors_table(&bytes, tensor, &shown),
        Some("npy") => npy(&bytes).map_err(fmt),
        other => Err(fmt(format!(
            "unknown table format {:?} (expected .gguf, .safetensors or .npy)",
            other.unwrap_or("")
        ))),
    }
}

fn f16s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
}

fn bf16s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
}

fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

fn table_2d(shape: &[usize], values: Vec<f32>, what: &str) -> Result<Table, String> {
    let [m, d] = shape else { return Err(format!("{what} has shape {shape:?}, expected two dimensions")) };
    Table::new(*m, *d, values).map_err(|e| e.to_string())
}

fn safetensors_table(bytes: &[u8], tensor: Option<&str>, path: &str) -> Result<Table, TableError> {
    use safetensors::{Dtype, SafeTensors};
    let fmt = |reason: String| TableError::Format { path: path.into(), reason };
    let st = SafeTensors::deserialize(bytes).map_err(|e| fmt(format!("not a safetensors file: {e}")))?;
    let mut names: Vec<&str> = st.names();
    names.sort_unstable();
    let name = match tensor {
        Some(n) => n.to_string(),
        None if names.len() == 1 => names[0].to_string(),
        None => return Err(fmt(format!("several tensors, name one with --tensor: {}", names.join(", ")))),
    };
    let view = st.tensor(&name).map_err(|_| TableError::NoTensor {
        path: path.into(),
        name: name.clone(),
        available: names.join(", "),
    })?;
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => f32s(view.data()).collect(),
        Dtype::F16 => f16s(view.data()).collect(),
        Dtype::BF16 => bf16s(view.data()).collect(),
        other => return Err(fmt(format!("tensor '{name}' is {other:?}; F32, F16 or BF16 expected"))),
    };
    table_2d(view.shape(), values, &format!("tensor '{name}'")).map_err(fmt)
}

fn npy(bytes: &[u8]) -> Result<Table, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy file".into());
    }
    let (hlen, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes.get(start..start + hlen).ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "non-text .npy header")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or("no descr")?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape: Vec<usize> = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or("no shape")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad dimension '{s}'")))
        .collect::<Result<_, _>>()?;
    let data = &bytes[start + hlen..];
    let count: usize = shape.iter().product();
    let (width, values): (usize, Vec<f32>) = match descr {
        "<f4" => (4, f32s(data).collect()),
        "<f2" => (2, f16s(data).collect()),
        "<f8" => (
            8,
            data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect(),
        ),
        other => return Err(format!("dtype {other} (expected <f4, <f2 or <f8)")),
    };
    if data.len() != count * width {
        return Err(format!("{} data bytes for shape {shape:?} of {descr}", data.len()));
    }
    table_2d(&shape, values, "the array")
}

/// A cursor over a GGUF file that fails, never panics, at the end.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len()).ok_or("truncated GGUF file")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        self.take(N)?.try_into().map_err(|_| "truncated GGUF file".into())
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = usize::try_from(self.u64()?).map_err(|_| "string too long")?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "non-UTF-8 string".into())
    }
    /// A metadata value of GGUF type `t`.
    fn value(&mut self, t: u32, depth: u32) -> Result<GgufValue, String> {
        Ok(match t {
            0 => GgufValue::Uint(u64::from(self.array::<1>()?[0])),
            1 => GgufValue::Int(i64::from(self.array::<1>()?[0] as i8)),
            2 => GgufValue::Uint(u64::from(u16::from_le_bytes(self.array()?))),
            3 => GgufValue::Int(i64::from(i16::from_le_bytes(self.array()?))),
            4 => GgufValue::Uint(u64::from(self.u32()?)),
            5 => GgufValue::Int(i64::from(i32::from_le_bytes(self.array()?))),
            6 => GgufValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            7 => GgufValue::Bool(self.array::<1>()?[0] != 0),
            8 => GgufValue::Str(self.string()?),
            9 if depth < 4 => {
                let (et, n) = (self.u32()?, self.u64()?);
                // Every element takes at least one byte: a count beyond the file is corrupt.
                if n > (self.b.len() - self.at) as u64 {
                    return Err(format!("array of {n} elements in a {}-byte file", self.b.len()));
                }
                GgufValue::Array((0..n).map(|_| self.value(et, depth + 1)).collect::<Result<_, _>>()?)
            }
            10 => GgufValue::Uint(self.u64()?),
            11 => GgufValue::Int(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(format!("unknown GGUF metadata type {other}")),
        })
    }
}

/// A GGUF metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type.
    Uint(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Uint(v) => Some(v),
            Self::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Float(v) => Some(v),
            Self::Uint(v) => Some(v as f64),
            Self::Int(v) => Some(v as f64),
            _ => None,
        }
    }
    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        if let Self::Str(s) = self { Some(s) } else { None }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        if let Self::Array(a) = self { Some(a) } else { None }
    }
}

/// One tensor's description in a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufTensor {
    /// Dimensions, fastest first (a `[d, m]` tensor is `m` rows of `d`).
    pub dims: Vec<u64>,
    /// ggml type id.
    pub ggml_type: u32,
    /// Byte range of the data in the file.
    range: std::ops::Range<usize>,
}

/// A parsed GGUF file (v2 or v3): metadata and tensors, read from bytes held in memory. Reading
/// never panics: a malformed file is an error naming the problem.
#[derive(Debug)]
pub struct Gguf {
    path: String,
    bytes: Vec<u8>,
    metadata: std::collections::BTreeMap<String, GgufValue>,
    tensors: Vec<(String, GgufTensor)>,
}

impl Gguf {
    /// Reads and parses `path`.
    pub fn open(path: &Path) -> Result<Self, TableError> {
        let shown = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|e| TableError::Io { path: shown.clone(), reason: e.to_string() })?;
        Self::parse(bytes, &shown)
    }

    /// Parses a GGUF file held in `bytes`; `path` names it in errors.
    pub fn parse(bytes: Vec<u8>, path: &str) -> Result<Self, TableError> {
        let fmt = |reason: String| TableError::Format { path: path.into(), reason };
        let mut c = Cur { b: &bytes, at: 0 };
        if c.take(4).map_err(fmt)? != b"GGUF" {
            return Err(fmt("not a GGUF file (bad magic)".into()));
        }
        let version = c.u32().map_err(fmt)?;
        if !(2..=3).contains(&version) {
            return Err(fmt(format!("GGUF version {version} (2 or 3 supported)")));
        }
        let (count, kvs) = (c.u64().map_err(fmt)?, c.u64().map_err(fmt)?);
        if count > 1 << 20 || kvs > 1 << 20 {
            return Err(fmt(format!("implausible counts: {count} tensors, {kvs} metadata entries")));
        }
        let mut metadata = std::collections::BTreeMap::new();
        for _ in 0..kvs {
            let key = c.string().map_err(fmt)?;
            let t = c.u32().map_err(fmt)?;
            let v = c.value(t, 0).map_err(|e| fmt(format!("metadata '{key}': {e}")))?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| fmt("bad general.alignment".into()))?,
        };
        let mut raw = Vec::new();
        for _ in 0..count {
            let name = c.string().map_err(fmt)?;
            let nd = c.u32().map_err(fmt)?;
            if nd > 4 {
                return Err(fmt(format!("tensor '{name}' has {nd} dimensions")));
            }
            let dims = (0..nd).map(|_| c.u64()).collect::<Result<Vec<u64>, _>>().map_err(fmt)?;
            let (t, off) = (c.u32().map_err(fmt)?, c.u64().map_err(fmt)?);
            raw.push((name, dims, t, off));
        }
        let data_start = (c.at as u64).div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, t, off) in raw {
            // Sizes of types this reader cannot decode are unknown; such tensors are listed with
            // an empty range and refused when read.
            let range = match ggml_block(t) {
                None => 0..0,
                Some((tname, per, size)) => {
                    let count = dims
                        .iter()
                        .try_fold(1u64, |a, &d| a.checked_mul(d))
                        .filter(|&n| n % per as u64 == 0 && dims.first().is_some_and(|d| d % per as u64 == 0))
                        .ok_or_else(|| {
                            fmt(format!("{tname} tensor '{name}' of {dims:?} is not whole blocks of {per}"))
                        })?;
                    let len = (count / per as u64).checked_mul(size as u64);
                    let start = data_start.checked_add(off);
                    start
                        .zip(len)
                        .and_then(|(s, l)| Some((usize::try_from(s).ok()?, usize::try_from(l).ok()?)))
                        .and_then(|(s, l)| Some(s..s.checked_add(l)?))
                        .filter(|r| r.end <= bytes.len())
                        .ok_or_else(|| fmt(format!("tensor '{name}' lies outside the file")))?
                }
            };
            tensors.push((name, GgufTensor { dims, ggml_type: t, range }));
        }
        Ok(Self { path: path.into(), bytes, metadata, tensors })
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A required metadata value, or an error naming the key.
    pub fn require(&self, key: &str) -> Result<&GgufValue, TableError> {
        self.meta(key).ok_or_else(|| TableError::Format {
            path: self.path.clone(),
            reason: format!("metadata '{key}' is missing"),
        })
    }

    /// The tensors' names, in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// A tensor's description.
    pub fn tensor_info(&self, name: &str) -> Result<&GgufTensor, TableError> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t).ok_or_else(|| TableError::NoTensor {
            path: self.path.clone(),
            name: name.into(),
            available: self.tensor_names().collect::<Vec<_>>().join(", "),
        })
    }

    /// A tensor dequantized to f32 (fastest dimension innermost), with its dimensions.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<u64>, Vec<f32>), TableError> {
        let t = self.tensor_info(name)?;
        if ggml_block(t.ggml_type).is_none() {
            return Err(TableError::Format {
                path: self.path.clone(),
                reason: format!("tensor '{name}' has ggml type {}, unsupported", t.ggml_type),
            });
        }
        Ok((t.dims.clone(), dequantize(t.ggml_type, &self.bytes[t.range.clone()])))
    }

    /// A two-dimensional tensor as a table (`[d, m]` is `m` rows of `d`).
    pub fn table(&self, name: &str) -> Result<Table, TableError> {
        let (dims, values) = self.tensor_f32(name)?;
        let fmt = |reason: String| TableError::Format { path: self.path.clone(), reason };
        let [d, m] = dims[..] else {
            return Err(fmt(format!("tensor '{name}' has dimensions {dims:?}, expected two")));
        };
        Table::new(m as usize, d as usize, values).map_err(|e| fmt(e.to_string()))
    }
}

/// ggml type ids this reader dequantizes, with (values per block, bytes per block).
fn ggml_block(t: u32) -> Option<(&'static str, usize, usize)> {
    match t {
        0 => Some(("F32", 1, 4)),
        1 => Some(("F16", 1, 2)),
        2 => Some(("Q4_0", 32, 18)),
        3 => Some(("Q4_1", 32, 20)),
        8 => Some(("Q8_0", 32, 34)),
        30 => Some(("BF16", 1, 2)),
        _ => None,
    }
}

/// Dequantizes the values of ggml type `t` held in `data`.
fn dequantize(t: u32, data: &[u8]) -> Vec<f32> {
    let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    match t {
        0 => f32s(data).collect(),
        1 => f16s(data).collect(),
        30 => bf16s(data).collect(),
        8 => data
            .chunks_exact(34)
            .flat_map(|b| {
                let d = half(&b[..2]);
                b[2..].iter().map(move |&q| d * f32::from(q as i8))
            })
            .collect(),
        2 | 3 => {
            let (size, off) = if t == 2 { (18, 2) } else { (20, 4) };
            let mut out = Vec::with_capacity(data.len() / size * 32);
            for b in data.chunks_exact(size) {
                let d = half(&b[..2]);
                let (min, bias) = if t == 3 { (half(&b[2..4]), 0.0) } else { (0.0, 8.0) };
                let qs = &b[off..off + 16];
                out.extend(qs.iter().map(|&q| d * (f32::from(q & 0x0f) - bias) + min));
                out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) - bias) + min));
            }
            out
        }
        _ => Vec::new(),
    }
}

fn gguf(bytes: Vec<u8>, name: &str, path: &str) -> Result<Table, TableError> {
    Gguf::parse(bytes, path)?.table(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fq-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A GGUF v3 file with one metadata entry and the given tensors `(name, dims, type, data)`.
    fn gguf_file(tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        let s = |b: &mut Vec<u8>, x: &str| {
            b.extend_from_slice(&(x.len() as u64).to_le_bytes());
            b.extend_from_slice(x.as_bytes());
        };
        s(&mut b, "general.name");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "test");
        let mut off = 0u64;
        let mut offs = Vec::new();
        for (name, dims, t, data) in tensors {
            s(&mut b, name);
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| b.extend_from_slice(&d.to_le_bytes()));
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&off.to_le_bytes());
            offs.push(off);
            off += (data.len() as u64).div_ceil(32) * 32;
        }
        while b.len() % 32 != 0 {
            b.push(0);
        }
        let base = b.len();
        for ((_, _, _, data), o) in tensors.iter().zip(offs) {
            b.resize(base + o as usize, 0);
            b.extend_from_slice(data);
        }
        b
    }

    #[test]
    fn gguf_every_type_dequantizes_as_defined() {
        let (m, d) = (3usize, 64usize);
        // Values chosen so that every format holds them exactly.
        let want: Vec<f32> = (0..m * d).map(|i| ((i % 15) as f32 - 7.0) * 0.5).collect();
        let f32b: Vec<u8> = want.iter().flat_map(|x| x.to_le_bytes()).collect();
        let f16b: Vec<u8> = want.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
        let bf16b: Vec<u8> = want.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect();
        // Q8_0: scale 0.5, q = x / 0.5.
        let q8: Vec<u8> = want
            .chunks(32)
            .flat_map(|blk| {
                let mut v = f16::from_f32(0.5).to_le_bytes().to_vec();
                v.extend(blk.iter().map(|&x| (x / 0.5) as i8 as u8));
                v
            })
            .collect();
        // Q4_0: scale 0.5, q = x / 0.5 + 8 in 0..15; value j in the low nibble of byte j, value
        // j + 16 in its high nibble.
        let q4 = |with_min: bool| -> Vec<u8> {
            want.chunks(32)
                .flat_map(|blk| {
                    let mut v = f16::from_f32(0.5).to_le_bytes().to_vec();
                    if with_min {
                        v.extend(f16::from_f32(-3.5).to_le_bytes()); // Q4_1: x = 0.5 q - 3.5
                    }
                    let code =
                        |x: f32| if with_min { ((x + 3.5) / 0.5) as u8 } else { (x / 0.5 + 8.0) as u8 };
                    v.extend((0..16).map(|j| code(blk[j]) | (code(blk[j + 16]) << 4)));
                    v
                })
                .collect()
        };
        for (t, data) in [(0u32, f32b), (1, f16b), (30, bf16b), (8, q8), (2, q4(false)), (3, q4(true))] {
            let file = gguf_file(&[
                ("other.weight", vec![4, 2], 0, vec![0; 32]),
                (GGUF_TOKEN_EMBD, vec![d as u64, m as u64], t, data),
            ]);
            let p = tmp(&format!("t{t}.gguf"), &file);
            let got = load_table(&p, None).unwrap_or_else(|e| panic!("type {t}: {e}"));
            assert_eq!((got.m(), got.d()), (m, d));
            assert_eq!(got.data(), &want[..], "type {t}");
        }
    }

    #[test]
    fn safetensors_and_npy_round_trip() {
        let (m, d) = (5usize, 7usize);
        let want: Vec<f32> = (0..m * d).map(|i| i as f32 * 0.25 - 3.0).collect();
        // safetensors, F32 and BF16 (values exact in bf16).
        for dtype in [safetensors::Dtype::F32, safetensors::Dtype::BF16, safetensors::Dtype::F16] {
            let data: Vec<u8> = match dtype {
                safetensors::Dtype::F32 => want.iter().flat_map(|x| x.to_le_bytes()).collect(),
                safetensors::Dtype::F16 => {
                    want.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect()
                }
                _ => want.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
            };
            let view = safetensors::tensor::TensorView::new(dtype, vec![m, d], &data).unwrap();
            let bytes = safetensors::serialize([("emb", view)], None).unwrap();
            let p = tmp("t.safetensors", &bytes);
            assert_eq!(load_table(&p, None).unwrap().data(), &want[..], "{dtype:?}");
            assert_eq!(load_table(&p, Some("emb")).unwrap().data(), &want[..]);
            assert!(matches!(load_table(&p, Some("nope")), Err(TableError::NoTensor { .. })));
        }
        // .npy v1, <f4 and <f8.
        for (descr, width) in [("<f4", 4usize), ("<f8", 8)] {
            let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({m}, {d}), }}");
            let mut h = header.into_bytes();
            while (10 + h.len() + 1) % 64 != 0 {
                h.push(b' ');
            }
            h.push(b'\n');
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(h.len() as u16).to_le_bytes());
            bytes.extend_from_slice(&h);
            for &x in &want {
                if width == 4 {
                    bytes.extend_from_slice(&x.to_le_bytes())
                } else {
                    bytes.extend_from_slice(&f64::from(x).to_le_bytes())
                }
            }
            let p = tmp("t.npy", &bytes);
            assert_eq!(load_table(&p, None).unwrap().data(), &want[..], "{descr}");
            assert!(load_table(&tmp("short.npy", &bytes[..bytes.len() - 1]), None).is_err());
        }
    }

    #[test]
    fn bad_files_are_clear_errors() {
        assert!(matches!(load_table(Path::new("/nonexistent/x.gguf"), None), Err(TableError::Io { .. })));
        let p = tmp("x.bin", b"hello");
        assert!(matches!(load_table(&p, None), Err(TableError::Format { .. })));
        for junk in [
            &b"GGUF"[..],
            b"GGUF\x03\0\0\0",
            b"NOPE\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            b"\x93NUMPY\x01\x00\xff\xff",
        ] {
            assert!(load_table(&tmp("j.gguf", junk), None).is_err());
            assert!(load_table(&tmp("j.npy", junk), None).is_err());
            assert!(load_table(&tmp("j.safetensors", junk), None).is_err());
        }
        // A GGUF whose tensor is missing lists what it has.
        let f = gguf_file(&[("other.weight", vec![4, 2], 0, vec![0; 32])]);
        let e = load_table(&tmp("m.gguf", &f), None).unwrap_err();
        assert!(e.to_string().contains("other.weight"), "{e}");
        // Random bytes after a valid magic never panic.
        let mut state = 7u64;
        for len in [16usize, 64, 300] {
            let mut b = b"GGUF\x03\0\0\0".to_vec();
            b.extend((0..len).map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 56) as u8
            }));
            assert!(load_table(&tmp("r.gguf", &b), None).is_err());
        }
    }
}
