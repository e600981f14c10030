//! The wire between client and server: length-prefixed frames, and the handshake payloads.
//!
//! A frame is `len: u32 LE | kind: u8 | payload`, `len = 1 + payload length`, at most the
//! receiver's frame limit. Every decoder here is total: any byte string gives a value or a
//! [`NetError`], never a panic (a property test and a cargo-fuzz target check it).
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | `Hello` | client | magic `FQN9`, scheme id (0: any), token length `u16`, token |
//! | `Info` | server | scheme id, then the design inputs (`m`, `d`, code bits, share bits, tokens per request, server threads, key switching, responses per shared `c`, tokens per session or 0, of which decode steps), the most tokens per request and the frame limit (`u32` each) |
//! | `Setup` | client | the scheme's setup message (keys) |
//! | `Ready` | server | session id `u64` |
//! | `Query` | client | token count `u32`, the scheme's query message |
//! | `Response` | server | request id `u64`, the scheme's response message |
//! | `Error` | server | code `u16`, UTF-8 text |
//! | `Bye` | client | empty |

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use fastquery_protocol::{cost::Device, fold::KeySwitching, harness::DesignInputs};

use crate::NetError;

/// The magic at the start of `Hello`: protocol 9 (since 2026-12-03, twenty-third session: a
/// folded query's slots sit where the expansion splits the fewest classes at every level,
/// `SlotLayout`, so a client of protocol 8 would place them where the server does not read;
/// protocol 8: `Info` carries how many of
/// a session's tokens arrive one per request, decode steps, a design input; protocol 7: the
/// tokens a session is expected to carry, a design input that counts each request's part of the
/// setup; protocol 6: responses share one `c` in groups of up to sixteen, with the keys of groups of four or more in two stages, and `Info`
/// carries the most responses per shared `c`, a design input; protocol 5: a folded design with
/// one token per response, or with responses split by parity, sends its `c` in the half ring,
/// with keys to subring secrets in the setup, and a shared `c1` takes its part of the slack;
/// protocol 4 sent a folded design's query `c0` only where the server's expansion reads it, and
/// every response's kept `c0` coefficients at the width of the largest rounded value; protocol
/// 3 let folded responses share `c1` in groups, with their keys in the setup; protocol 2 added
/// the server's threads, a design input, and the most tokens per request to `Info`).
pub const MAGIC: &[u8; 4] = b"FQN9";

/// Frame kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Hello = 1,
    Info = 2,
    Setup = 3,
    Ready = 4,
    Query = 5,
    Response = 6,
    Error = 7,
    Bye = 8,
}

impl Kind {
    fn from_u8(v: u8) -> Result<Self, NetError> {
        Ok(match v {
            1 => Self::Hello,
            2 => Self::Info,
            3 => Self::Setup,
            4 => Self::Ready,
            5 => Self::Query,
            6 => Self::Response,
            7 => Self::Error,
            8 => Self::Bye,
            _ => return Err(NetError::Malformed(format!("unknown frame kind {v}"))),
        })
    }
}

/// Error codes of `Error` frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Code {
    /// A malformed frame or payload.
    BadFrame = 1,
    /// Wrong or missing token.
    Unauthorised = 2,
    /// The client asked for a scheme this server does not run.
    WrongScheme = 3,
    /// A limit was exceeded (frame size, tokens per request).
    Limit = 4,
    /// The scheme refused the message (state, parameters, decoding).
    Protocol = 5,
    /// Too many sessions: try later.
    Busy = 6,
    /// The server failed.
    Internal = 7,
    /// The server is shutting down.
    ShuttingDown = 8,
}

impl Code {
    /// The code of a wire value (unknown values read as `Internal`).
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::BadFrame,
            2 => Self::Unauthorised,
            3 => Self::WrongScheme,
            4 => Self::Limit,
            5 => Self::Protocol,
            6 => Self::Busy,
            8 => Self::ShuttingDown,
            _ => Self::Internal,
        }
    }
}

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, payload: Vec<u8>) -> Self {
        Self { kind, payload }
    }

    /// The frame's bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.payload.len());
        out.extend_from_slice(&(1 + self.payload.len() as u32).to_le_bytes());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.payload);
        out
    }

    /// Parses one whole frame from `bytes` (exactly one, nothing after it).
    pub fn from_bytes(bytes: &[u8], max_frame: usize) -> Result<Self, NetError> {
        let mut r = Reader::new(bytes);
        let len = r.u32()? as usize;
        check_len(len, max_frame)?;
        let kind = Kind::from_u8(r.u8()?)?;
        let payload = r.take(len - 1)?.to_vec();
        r.end()?;
        Ok(Self { kind, payload })
    }

    /// An error frame.
    pub fn error(code: Code, text: &str) -> Self {
        let mut p = (code as u16).to_le_bytes().to_vec();
        p.extend_from_slice(text.as_bytes());
        Self::new(Kind::Error, p)
    }

    /// The code and text of an error frame.
    pub fn parse_error(&self) -> Result<(Code, String), NetError> {
        let mut r = Reader::new(&self.payload);
        let code = Code::from_u16(r.u16()?);
        Ok((code, String::from_utf8_lossy(r.rest()).into_owned()))
    }
}

fn check_len(len: usize, max_frame: usize) -> Result<(), NetError> {
    if len == 0 {
        return Err(NetError::Malformed("empty frame".into()));
    }
    if len > max_frame {
        return Err(NetError::TooLarge { len, max: max_frame });
    }
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before its first byte. The length is
/// checked against `max_frame` before anything is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame: usize,
) -> Result<Option<Frame>, NetError> {
    let mut len = [0u8; 4];
    match r.read(&mut len[..1]).await? {
        0 => return Ok(None),
        _ => r.read_exact(&mut len[1..]).await.map_err(truncated)?,
    };
    let len = u32::from_le_bytes(len) as usize;
    check_len(len, max_frame)?;
    let mut kind = [0u8; 1];
    r.read_exact(&mut kind).await.map_err(truncated)?;
    let kind = Kind::from_u8(kind[0])?;
    let mut payload = vec![0u8; len - 1];
    r.read_exact(&mut payload).await.map_err(truncated)?;
    Ok(Some(Frame { kind, payload }))
}

fn truncated(e: std::io::Error) -> NetError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        NetError::Malformed("connection closed inside a frame".into())
    } else {
        NetError::Io(e)
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> Result<(), NetError> {
    w.write_all(&frame.to_bytes()).await?;
    w.flush().await?;
    Ok(())
}

/// A bounds-checked little-endian reader.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], NetError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| NetError::Malformed(format!("payload ends before {n} more bytes")))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, NetError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, NetError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("two bytes")))
    }

    pub fn u32(&mut self) -> Result<u32, NetError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    pub fn u64(&mut self) -> Result<u64, NetError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.at..];
        self.at = self.bytes.len();
        s
    }

    pub fn end(&self) -> Result<(), NetError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(NetError::Malformed(format!("{} trailing bytes", self.bytes.len() - self.at)))
        }
    }
}

/// The client's opening message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The scheme the client wants (its wire id), 0 for whatever the server runs.
    pub scheme: u8,
    /// The pre-shared access token.
    pub token: Vec<u8>,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = MAGIC.to_vec();
        p.push(self.scheme);
        p.extend_from_slice(&(self.token.len() as u16).to_le_bytes());
        p.extend_from_slice(&self.token);
        p
    }

    pub fn decode(payload: &[u8]) -> Result<Self, NetError> {
        let mut r = Reader::new(payload);
        let magic = r.take(4)?;
        if magic != MAGIC {
            return Err(NetError::Malformed(if magic.starts_with(b"FQN") {
                format!("a client of protocol {}; this server speaks {}", magic[3] as char, MAGIC[3] as char)
            } else {
                "not a FastQuery client (bad magic)".into()
            }));
        }
        let scheme = r.u8()?;
        let n = r.u16()? as usize;
        let token = r.take(n)?.to_vec();
        r.end()?;
        Ok(Self { scheme, token })
    }
}

/// What the server runs: the public inputs from which the client derives the same design
/// ([`DesignInputs`]), and the server's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    pub scheme: u8,
    pub m: u32,
    pub d: u32,
    pub bits: u32,
    pub plain_bits: u32,
    /// Tokens per request the design is made for.
    pub tokens: u32,
    /// Threads of the server's CPU (a design input: `fastquery-wan` ranks by estimated time).
    pub server_threads: u32,
    /// Where the server computes ([`Device::code`]; a design input for the same reason).
    pub device: u32,
    /// The key switching the folded designs may use ([`KeySwitching::code`]).
    pub keyswitch: u32,
    /// The most responses sharing one `c` (1 to [`fastquery_protocol::fold::MAX_SHARED`]).
    pub max_shared: u32,
    /// Tokens per session the design is made for (0: sessions without end).
    pub session_tokens: u32,
    /// Of those, the tokens that arrive one per request (0 without a session).
    pub decode_tokens: u32,
    /// The most tokens the server accepts in one request (at most `tokens`).
    pub max_tokens: u32,
    pub max_frame: u32,
}

/// The most server threads an `Info` may claim.
pub const MAX_SERVER_THREADS: u32 = 1 << 16;

impl Info {
    /// The design inputs both parties derive the design from (`decode` checked the key
    /// switching's and the device's codes; unknown ones read as `Any` and the CPU).
    pub fn inputs(&self) -> DesignInputs {
        DesignInputs {
            m: self.m as usize,
            d: self.d as usize,
            bits: self.bits,
            plain_bits: self.plain_bits,
            tokens: self.tokens as usize,
            server_threads: self.server_threads as usize,
            device: Device::from_code(self.device).unwrap_or_default(),
            keyswitch: KeySwitching::from_code(self.keyswitch).unwrap_or_default(),
            max_shared: self.max_shared as usize,
            session_tokens: (self.session_tokens > 0).then_some(self.session_tokens as usize),
            decode_tokens: self.decode_tokens as usize,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut p = vec![self.scheme];
        let fields = [
            self.m,
            self.d,
            self.bits,
            self.plain_bits,
            self.tokens,
            self.server_threads,
            self.device,
            self.keyswitch,
            self.max_shared,
            self.session_tokens,
            self.decode_tokens,
            self.max_tokens,
            self.max_frame,
        ];
        for v in fields {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    }

    pub fn decode(payload: &[u8]) -> Result<Self, NetError> {
        let mut r = Reader::new(payload);
        let info = Self {
            scheme: r.u8()?,
            m: r.u32()?,
            d: r.u32()?,
            bits: r.u32()?,
            plain_bits: r.u32()?,
            tokens: r.u32()?,
            server_threads: r.u32()?,
            device: r.u32()?,
            keyswitch: r.u32()?,
            max_shared: r.u32()?,
            session_tokens: r.u32()?,
            decode_tokens: r.u32()?,
            max_tokens: r.u32()?,
            max_frame: r.u32()?,
        };
        r.end()?;
        info.checked()
    }

    /// What a server tells its clients: `scheme` on the design `inputs`, with its limits
    /// (refused where a client would refuse it).
    pub fn new(
        scheme: u8,
        inputs: &DesignInputs,
        max_tokens: usize,
        max_frame: usize,
    ) -> Result<Self, NetError> {
        let u = |v: usize, what: &str| u32::try_from(v).map_err(|_| NetError::Invalid(format!("{what} {v}")));
        Self {
            scheme,
            m: u(inputs.m, "vocabulary")?,
            d: u(inputs.d, "channels")?,
            bits: inputs.bits,
            plain_bits: inputs.plain_bits,
            tokens: u(inputs.tokens, "tokens")?,
            server_threads: u(inputs.server_threads, "server threads")?,
            device: inputs.device.code(),
            keyswitch: inputs.keyswitch.code(),
            max_shared: u(inputs.max_shared, "responses per shared c")?,
            // 0 on the wire is a session without end: a declared session of 0 tokens would
            // read as one, and the client would derive another design.
            session_tokens: match inputs.session_tokens {
                Some(0) => return Err(NetError::Invalid("a session of 0 tokens".into())),
                t => u(t.unwrap_or(0), "tokens per session")?,
            },
            decode_tokens: u(inputs.decode_tokens, "decode tokens")?,
            max_tokens: u(max_tokens, "tokens")?,
            max_frame: u(max_frame, "frame limit")?,
        }
        .checked()
    }

    /// `self` where it is plausible: rows and channels, a share ring of 1 to 64 bits, a request
    /// limit of 1 to `tokens`, 1 to [`MAX_SERVER_THREADS`] threads, a known device, a known
    /// key switching, 1
    /// to [`fastquery_protocol::fold::MAX_SHARED`] responses per shared `c`, no more decode
    /// steps than the session's tokens (none without a session).
    fn checked(self) -> Result<Self, NetError> {
        if self.m == 0
            || self.d == 0
            || !(1..=self.tokens).contains(&self.max_tokens)
            || !(1..=64).contains(&self.plain_bits)
            || !(1..=MAX_SERVER_THREADS).contains(&self.server_threads)
            || Device::from_code(self.device).is_none()
            || KeySwitching::from_code(self.keyswitch).is_none()
            || !(1..=fastquery_protocol::fold::MAX_SHARED as u32).contains(&self.max_shared)
            || self.inputs().checked().is_err()
        {
            return Err(NetError::Malformed(format!("implausible server info {self:?}")));
        }
        Ok(self)
    }
}

/// A query frame's payload: token count, then the scheme's message.
pub fn encode_query(tokens: u32, query: &[u8]) -> Vec<u8> {
    let mut p = tokens.to_le_bytes().to_vec();
    p.extend_from_slice(query);
    p
}

/// Splits a query payload.
pub fn decode_query(payload: &[u8]) -> Result<(u32, &[u8]), NetError> {
    let mut r = Reader::new(payload);
    let n = r.u32()?;
    Ok((n, r.rest()))
}

/// A response frame's payload: request id, then the scheme's message.
pub fn encode_response(request: u64, response: &[u8]) -> Vec<u8> {
    let mut p = request.to_le_bytes().to_vec();
    p.extend_from_slice(response);
    p
}

/// Splits a response payload.
pub fn decode_response(payload: &[u8]) -> Result<(u64, &[u8]), NetError> {
    let mut r = Reader::new(payload);
    let id = r.u64()?;
    Ok((id, r.rest()))
}
