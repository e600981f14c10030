//! # fastquery-net
//!
//! FastQuery as a service: `fastquery serve` holds the table and `fastquery query` connects to
//! it over TCP. The two parties run any scheme of `fastquery-protocol`; this crate carries its
//! messages and does everything a deployed server needs around them.
//!
//! * [`frame`]: length-prefixed frames and the handshake payloads. Every decoder is total
//!   (errors, never panics), checked by a property test and a cargo-fuzz target (`fuzz/`).
//! * [`Server`]: tokio, one task per connection. It checks a pre-shared token in constant time,
//!   then tells the client the public inputs of the design (table shape, code width, share ring,
//!   tokens per request). It keeps each session's keys until the connection ends. The schemes'
//!   answers run on blocking threads, at most `workers` at once. Everything is bounded: frame
//!   size (checked before allocating), tokens per request, sessions, idle time. The server's
//!   shares go to a [`ShareSink`], for example one `.npy` per request id (`serve --shares-dir`).
//!   A bad client gets an `Error` frame or a closed connection, and every other client is served
//!   as before. Shutdown is graceful: no new connections, running requests finish.
//! * [`Client`]: connects, derives the same design from the server's `Info`, sends its keys
//!   once, then queries. A request longer than the server's batch is split.
//!
//! * [`tls`]: optional TLS (rustls, ring provider) on both sides, from PEM files; without it the
//!   access token travels in clear, so plain TCP belongs on a private network only.
//! * Queries that arrive together, from any sessions, are answered in one pass over the table
//!   (`SchemeServer::answer_many`), up to `max_batch` within `batch_window`.
#![forbid(unsafe_code)]

mod client;
pub mod frame;
mod server;
pub mod tls;

use std::path::Path;

pub use client::{Client, ClientConfig, QueryResult};
pub use server::{Server, ServerConfig, ServerStats, ShareSink, npy_sink};

use fastquery_protocol::Shares;
use thiserror::Error;

/// Errors of the server and client.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NetError {
    /// The socket failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The server could not be reached.
    #[error("cannot reach the server at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// A malformed frame or payload.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A frame above the receiver's limit.
    #[error("a frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The peer refused (an `Error` frame), with its code.
    #[error("the server refused: {text} ({code:?})")]
    Refused { code: frame::Code, text: String },
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The scheme failed.
    #[error(transparent)]
    Protocol(#[from] fastquery_protocol::ProtocolError),
    /// Bad arguments.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Writes shares as a NumPy `.npy` file: `uint64`, shape `(tokens, d)`, values mod `2^l`.
pub fn write_npy(path: &Path, shares: &Shares) -> std::io::Result<()> {
    std::fs::write(path, npy_bytes(shares))
}

/// The bytes of [`write_npy`]'s file (format 1.0, header padded to 64 bytes).
pub fn npy_bytes(shares: &Shares) -> Vec<u8> {
    let dict =
        format!("{{'descr': '<u8', 'fortran_order': False, 'shape': ({}, {}), }}", shares.tokens, shares.d);
    let unpadded = 10 + dict.len() + 1;
    let pad = unpadded.next_multiple_of(64) - unpadded;
    let header = format!("{dict}{}\n", " ".repeat(pad));
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in &shares.values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
