//! The wire format. What is counted is what this encoding produces.
//!
//! ```text
//! header (14 bytes): "FQ" | version u8 | kind u8 | scheme u8 | reserved u8 = 0
//!                    | parameter fingerprint u32 LE | body length u32 LE
//! body: a bit stream, least significant bit first; each field has a fixed width:
//!       counts 32 bits, seeds 256 bits, RNS residues ceil(log2 p) bits of their prime,
//!       integers mod q' (response c0) ceil(log2(q' >> dropped bits)) + 1 bits.
//! ```
//! Decoding checks the magic, the version, the kind, the scheme, the parameter fingerprint,
//! the exact body length, every residue against its modulus, and every count against the
//! limits; any violation is a [`WireError`], never a panic.

use thiserror::Error;

/// `"FQ"`.
pub const MAGIC: [u8; 2] = *b"FQ";
/// Format version.
pub const VERSION: u8 = 1;
/// Header size in bytes.
pub const HEADER_BYTES: usize = 14;

/// Message kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client to server, once: public key.
    Setup = 1,
    /// Client to server: encrypted token ids.
    Query = 2,
    /// Server to client: encrypted shares.
    Response = 3,
}

/// Decoding errors.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the format requires.
    #[error("message truncated: {need} bytes needed, {have} present")]
    Truncated { need: usize, have: usize },
    /// More bytes than allowed or announced.
    #[error("message oversized: {0}")]
    Oversized(String),
    /// Not a FastQuery message.
    #[error("not a FastQuery message (bad magic)")]
    BadMagic,
    /// Unsupported version.
    #[error("unsupported wire version {0} (this build speaks {VERSION})")]
    Version(u8),
    /// Wrong kind of message.
    #[error("expected a {expected:?} message, got kind {found}")]
    Kind { expected: Kind, found: u8 },
    /// Message for another scheme.
    #[error("message for scheme id {found}, expected {expected}")]
    Scheme { expected: u8, found: u8 },
    /// Peers with different parameters.
    #[error("parameter mismatch: message has fingerprint {found:#010x}, expected {expected:#010x}")]
    Params { expected: u32, found: u32 },
    /// A field out of range (a count, a residue, a reserved byte).
    #[error("invalid field: {0}")]
    Field(String),
}

/// Builds a message: header, then a bit-packed body.
#[derive(Debug)]
pub struct Writer {
    buf: Vec<u8>,
    acc: u64,
    bits: u32,
    header: bool,
}

impl Writer {
    /// Starts a message.
    pub fn new(kind: Kind, scheme: u8, param_id: u32) -> Self {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(&MAGIC);
        buf.extend_from_slice(&[VERSION, kind as u8, scheme, 0]);
        buf.extend_from_slice(&param_id.to_le_bytes());
        buf.extend_from_slice(&[0; 4]); // body length, patched by finish
        Self { buf, acc: 0, bits: 0, header: true }
    }

    /// A writer of one byte-aligned record of a body, without a header (records are encoded in
    /// parallel and appended with [`Self::record`]).
    pub fn body_only() -> Self {
        Self { buf: Vec::new(), acc: 0, bits: 0, header: false }
    }

    /// Pads the bit stream with zeros to the next byte.
    pub fn align(&mut self) {
        if self.bits > 0 {
            self.buf.push(self.acc as u8);
            self.acc = 0;
            self.bits = 0;
        }
    }

    /// Makes room for `bytes` more (a message of records knows its size before appending
    /// them: one allocation instead of a doubling series of copies).
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve(bytes + 1);
    }

    /// Appends a finished record at a byte boundary.
    pub fn record(&mut self, bytes: &[u8]) {
        self.align();
        self.buf.extend_from_slice(bytes);
    }

    /// Appends the low `width` bits of `v` (`width <= 64`).
    pub fn bits(&mut self, v: u64, width: u32) {
        debug_assert!(width <= 64 && (width == 64 || v >> width == 0));
        let mut v = v;
        let mut width = width;
        while width > 0 {
            let take = width.min(64 - self.bits).min(32);
            let part = v & ((1u64 << take) - 1);
            self.acc |= part << self.bits;
            self.bits += take;
            v = if take == 64 { 0 } else { v >> take };
            width -= take;
            while self.bits >= 8 {
                self.buf.push(self.acc as u8);
                self.acc >>= 8;
                self.bits -= 8;
            }
        }
    }

    /// Appends a `u128` of `width <= 128` bits.
    pub fn bits_u128(&mut self, v: u128, width: u32) {
        let lo = width.min(64);
        self.bits(v as u64 & mask64(lo), lo);
        if width > 64 {
            self.bits((v >> 64) as u64, width - 64);
        }
    }

    /// Appends a 32-bit count.
    pub fn u32(&mut self, v: u32) {
        self.bits(u64::from(v), 32);
    }

    /// Appends raw bytes (a seed).
    pub fn bytes(&mut self, b: &[u8]) {
        b.iter().for_each(|&x| self.bits(u64::from(x), 8));
    }

    /// Appends residues mod `p`, each in `bit_width(p)` bits (the same bits as [`Self::bits`]
    /// for each; 32 bits at a time leave the accumulator, the bulk of every message).
    pub fn residues(&mut self, values: &[u32], p: u32) {
        let w = bit_width(u64::from(p));
        debug_assert!(values.iter().all(|&v| u64::from(v) >> w == 0));
        self.buf.reserve((values.len() * w as usize).div_ceil(8));
        // `bits < 8` between calls; below 32 before each residue, so `bits + w < 64`.
        let (mut acc, mut bits) = (self.acc, self.bits);
        for &v in values {
            acc |= u64::from(v) << bits;
            bits += w;
            if bits >= 32 {
                self.buf.extend_from_slice(&(acc as u32).to_le_bytes());
                acc >>= 32;
                bits -= 32;
            }
        }
        while bits >= 8 {
            self.buf.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
        (self.acc, self.bits) = (acc, bits);
    }

    /// Appends the low `width` bits of each value (`width <= 64`): the same bits as
    /// [`Self::bits`] for each, 64 bits at a time leaving a 128-bit accumulator (a rounded `c1`
    /// of a blocked request is millions of them).
    pub fn bits_many(&mut self, values: &[u64], width: u32) {
        debug_assert!(width <= 64 && values.iter().all(|&v| width == 64 || v >> width == 0));
        self.buf.reserve((values.len() * width as usize).div_ceil(8));
        // `bits < 8` between calls; below 64 before each value, so `bits + width < 128`.
        let (mut acc, mut bits) = (u128::from(self.acc), self.bits);
        for &v in values {
            acc |= u128::from(v) << bits;
            bits += width;
            if bits >= 64 {
                self.buf.extend_from_slice(&(acc as u64).to_le_bytes());
                acc >>= 64;
                bits -= 64;
            }
        }
        while bits >= 8 {
            self.buf.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
        (self.acc, self.bits) = (acc as u64, bits);
    }

    /// Pads to a byte, patches the length (if there is a header), returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.align();
        if self.header {
            let body = (self.buf.len() - HEADER_BYTES) as u32;
            self.buf[10..14].copy_from_slice(&body.to_le_bytes());
        }
        self.buf
    }
}

fn mask64(w: u32) -> u64 {
    if w >= 64 { u64::MAX } else { (1u64 << w) - 1 }
}

/// Number of bits of `x` (`bit_width(p)` is what a residue mod `p` needs).
pub fn bit_width(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// Reads a message written by [`Writer`].
#[derive(Debug)]
pub struct Reader<'a> {
    body: &'a [u8],
    pos_bits: usize,
}

impl<'a> Reader<'a> {
    /// Checks the header against what the receiver expects and returns a reader of the body.
    /// `max_body` bounds the body length (a server's message-size limit).
    pub fn open(
        msg: &'a [u8],
        kind: Kind,
        scheme: u8,
        param_id: u32,
        max_body: usize,
    ) -> Result<Self, WireError> {
        if msg.len() < HEADER_BYTES {
            return Err(WireError::Truncated { need: HEADER_BYTES, have: msg.len() });
        }
        if msg[..2] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if msg[2] != VERSION {
            return Err(WireError::Version(msg[2]));
        }
        if msg[3] != kind as u8 {
            return Err(WireError::Kind { expected: kind, found: msg[3] });
        }
        if msg[4] != scheme {
            return Err(WireError::Scheme { expected: scheme, found: msg[4] });
        }
        if msg[5] != 0 {
            return Err(WireError::Field(format!("reserved byte is {}", msg[5])));
        }
        let found = u32::from_le_bytes([msg[6], msg[7], msg[8], msg[9]]);
        if found != param_id {
            return Err(WireError::Params { expected: param_id, found });
        }
        let len = u32::from_le_bytes([msg[10], msg[11], msg[12], msg[13]]) as usize;
        if len > max_body {
            return Err(WireError::Oversized(format!("body of {len} bytes exceeds the limit of {max_body}")));
        }
        let body = &msg[HEADER_BYTES..];
        if body.len() < len {
            return Err(WireError::Truncated { need: HEADER_BYTES + len, have: msg.len() });
        }
        if body.len() > len {
            return Err(WireError::Oversized(format!("{} bytes after the announced body", body.len() - len)));
        }
        Ok(Self { body, pos_bits: 0 })
    }

    /// A reader of one record (a byte slice of a body).
    pub fn record(bytes: &'a [u8]) -> Self {
        Self { body: bytes, pos_bits: 0 }
    }

    /// Takes the next `len` whole bytes (after zero padding to a byte boundary) as a slice.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        let pad = (8 - self.pos_bits % 8) % 8;
        if pad > 0 && self.bits(pad as u32)? != 0 {
            return Err(WireError::Field("nonzero padding".into()));
        }
        self.need(8 * len)?;
        let start = self.pos_bits / 8;
        self.pos_bits += 8 * len;
        Ok(&self.body[start..start + len])
    }

    /// Bits left.
    pub fn remaining_bits(&self) -> usize {
        self.body.len() * 8 - self.pos_bits
    }

    /// Fails unless at least `bits` more bits are present (checked before allocating).
    pub fn need(&self, bits: usize) -> Result<(), WireError> {
        if self.remaining_bits() < bits {
            return Err(WireError::Truncated {
                need: HEADER_BYTES + (self.pos_bits + bits).div_ceil(8),
                have: HEADER_BYTES + self.body.len(),
            });
        }
        Ok(())
    }

    /// Reads `width <= 64` bits.
    pub fn bits(&mut self, width: u32) -> Result<u64, WireError> {
        self.need(width as usize)?;
        let mut v = 0u64;
        let mut got = 0u32;
        while got < width {
            let byte = self.body[self.pos_bits / 8];
            let off = (self.pos_bits % 8) as u32;
            let take = (8 - off).min(width - got);
            let part = (u64::from(byte) >> off) & mask64(take);
            v |= part << got;
            got += take;
            self.pos_bits += take as usize;
        }
        Ok(v)
    }

    /// Reads a `u128` of `width <= 128` bits.
    pub fn bits_u128(&mut self, width: u32) -> Result<u128, WireError> {
        let lo = u128::from(self.bits(width.min(64))?);
        let hi = if width > 64 { u128::from(self.bits(width - 64)?) } else { 0 };
        Ok(lo | (hi << 64))
    }

    /// Reads a 32-bit count and checks it against `max`.
    pub fn count(&mut self, what: &str, max: usize) -> Result<usize, WireError> {
        let v = self.bits(32)? as usize;
        if v > max {
            return Err(WireError::Field(format!("{what} = {v} exceeds the limit {max}")));
        }
        Ok(v)
    }

    /// Reads `N` bytes.
    pub fn bytes<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.need(8 * N)?;
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.bits(8)? as u8;
        }
        Ok(out)
    }

    /// Reads `count` residues mod `p`, each checked to be below `p`. Where eight bytes are left
    /// from a residue's first byte, it is cut from one little-endian load (`w <= 32` bits at an
    /// offset below 8 fit 64); the last few take [`Self::bits`].
    pub fn residues(&mut self, count: usize, p: u32, out: &mut Vec<u32>) -> Result<(), WireError> {
        let w = bit_width(u64::from(p));
        self.need(count * w as usize)?;
        out.reserve(count);
        let mask = mask64(w);
        let bad = |v: u64| WireError::Field(format!("residue {v} is not below its modulus {p}"));
        for _ in 0..count {
            let byte = self.pos_bits / 8;
            let v = match self.body.get(byte..byte + 8) {
                Some(b) => {
                    let word = u64::from_le_bytes(b.try_into().expect("eight bytes"));
                    let off = self.pos_bits % 8;
                    self.pos_bits += w as usize;
                    (word >> off) & mask
                }
                None => self.bits(w)?,
            };
            if v >= u64::from(p) {
                return Err(bad(v));
            }
            out.push(v as u32);
        }
        Ok(())
    }

    /// Succeeds only if nothing but the final byte's padding is left (and it is zero).
    pub fn end(self) -> Result<(), WireError> {
        let left = self.remaining_bits();
        if left >= 8 {
            return Err(WireError::Oversized(format!("{} unread bytes", left / 8)));
        }
        if left > 0 && (self.body[self.body.len() - 1] >> (8 - left)) != 0 {
            return Err(WireError::Field("nonzero padding".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bit_fields_round_trip(fields in proptest::collection::vec((any::<u128>(), 1u32..=128), 0..60)) {
            let mut w = Writer::new(Kind::Query, 1, 7);
            for &(v, width) in &fields {
                let v = if width == 128 { v } else { v & ((1u128 << width) - 1) };
                w.bits_u128(v, width);
            }
            let msg = w.finish();
            let total: u32 = fields.iter().map(|f| f.1).sum();
            prop_assert_eq!(msg.len(), HEADER_BYTES + (total as usize).div_ceil(8));
            let mut r = Reader::open(&msg, Kind::Query, 1, 7, usize::MAX).unwrap();
            for &(v, width) in &fields {
                let v = if width == 128 { v } else { v & ((1u128 << width) - 1) };
                prop_assert_eq!(r.bits_u128(width).unwrap(), v);
            }
            r.end().unwrap();
        }
    }

    proptest! {
        /// `bits_many` writes exactly the bits of one `bits` call per value, from any bit
        /// offset, at every width, and a later field follows it as it would.
        #[test]
        fn bits_many_matches_bit_fields(
            prefix in 0u32..64,
            width in 1u32..=64,
            values in proptest::collection::vec(any::<u64>(), 0..50),
            tail in any::<u16>(),
        ) {
            let values: Vec<u64> = values.iter().map(|&v| v & mask64(width)).collect();
            let (mut bulk, mut one) = (Writer::body_only(), Writer::body_only());
            for wr in [&mut bulk, &mut one] {
                wr.bits(u64::from(tail) & mask64(prefix), prefix);
            }
            bulk.bits_many(&values, width);
            values.iter().for_each(|&v| one.bits(v, width));
            for wr in [&mut bulk, &mut one] {
                wr.bits(u64::from(tail), 16);
            }
            prop_assert_eq!(bulk.finish(), one.finish());
        }
    }

    proptest! {
        /// The bulk residue paths write and read exactly the bits of one `bits` call per
        /// residue, from any bit offset, up to the last byte; a residue at or above its modulus
        /// is refused wherever it sits.
        #[test]
        fn residues_match_bit_fields(
            prefix in 0u32..64,
            p in 2u32..=u32::MAX,
            seed in any::<u64>(),
            count in 0usize..40,
            bad_at in any::<proptest::sample::Index>(),
        ) {
            let mut x = seed | 1;
            let values: Vec<u32> = (0..count)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % u64::from(p)) as u32
                })
                .collect();
            let w = bit_width(u64::from(p));
            let (mut bulk, mut one) = (Writer::body_only(), Writer::body_only());
            for wr in [&mut bulk, &mut one] {
                wr.bits(seed & mask64(prefix), prefix);
            }
            bulk.residues(&values, p);
            values.iter().for_each(|&v| one.bits(u64::from(v), w));
            let (bulk, one) = (bulk.finish(), one.finish());
            prop_assert_eq!(&bulk, &one);
            let mut r = Reader::record(&bulk);
            r.bits(prefix).unwrap();
            let mut got = Vec::new();
            r.residues(count, p, &mut got).unwrap();
            prop_assert_eq!(&got, &values);
            r.end().unwrap();
            // The same stream with one residue replaced by p (where it fits the width).
            if count > 0 {
                let mut spoiled = values.clone();
                spoiled[bad_at.index(count)] = p;
                let mut wr = Writer::body_only();
                wr.bits(seed & mask64(prefix), prefix);
                spoiled.iter().for_each(|&v| wr.bits(u64::from(v), w));
                let msg = wr.finish();
                let mut r = Reader::record(&msg);
                r.bits(prefix).unwrap();
                prop_assert!(r.residues(count, p, &mut Vec::new()).is_err());
            }
        }
    }

    #[test]
    fn header_checks() {
        let msg = Writer::new(Kind::Setup, 2, 0xdead_beef).finish();
        assert!(Reader::open(&msg, Kind::Setup, 2, 0xdead_beef, 10).is_ok());
        assert_eq!(
            Reader::open(&msg, Kind::Query, 2, 0xdead_beef, 10).unwrap_err(),
            WireError::Kind { expected: Kind::Query, found: 1 }
        );
        assert!(matches!(Reader::open(&msg, Kind::Setup, 3, 0xdead_beef, 10), Err(WireError::Scheme { .. })));
        assert!(matches!(Reader::open(&msg, Kind::Setup, 2, 1, 10), Err(WireError::Params { .. })));
        assert!(matches!(
            Reader::open(&msg[..5], Kind::Setup, 2, 0xdead_beef, 10),
            Err(WireError::Truncated { .. })
        ));
        let mut bad = msg.clone();
        bad[0] = b'X';
        assert_eq!(Reader::open(&bad, Kind::Setup, 2, 0xdead_beef, 10).unwrap_err(), WireError::BadMagic);
        let mut bad = msg.clone();
        bad[2] = 9;
        assert_eq!(Reader::open(&bad, Kind::Setup, 2, 0xdead_beef, 10).unwrap_err(), WireError::Version(9));
        let mut long = msg.clone();
        long.push(0);
        assert!(matches!(Reader::open(&long, Kind::Setup, 2, 0xdead_beef, 10), Err(WireError::Oversized(_))));
    }
}
