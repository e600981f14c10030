//! # fastquery-protocol
//!
//! The private embedding query as two parties see it. Sits on the HE engine (`fastquery-he`),
//! the layouts (`fastquery-pack`) and the tables (`fastquery-table`); the binary sits on it.
//!
//! * [`wire`]: the bit-packed, versioned, length-checked encoding whose bytes are what every
//!   report counts; [`messages`]: setup, query, response.
//! * [`SchemeServer`] / [`SchemeClient`]: what every scheme implements; the client is a state
//!   machine, the server keeps one public key per session.
//! * Schemes: [`cheetah`], [`iron`], [`bumblebee`], all built on [`blocked`] (a block layout,
//!   optional response packing, and the two parties' state machines).
//! * [`shards::Shards`]: one server over several devices (a table copy on each, sessions
//!   placed on the least loaded, a batch's parts answered at once).
//! * [`harness`]: runs schemes on a workload and measures bytes, times and latency under the
//!   LAN/WAN link models; [`session`]: a whole client session (setup, prompt, decode steps),
//!   measured against the bytes its design predicts.
#![forbid(unsafe_code)]

pub mod blocked;
pub mod bumblebee;
pub mod cheetah;
pub mod cost;
pub mod fastquery;
pub mod fold;
pub mod harness;
pub mod iron;
pub mod messages;
mod scheme;
pub mod session;
pub mod shards;
mod trace;
pub mod wire;

// The README's library examples run as doc tests here (the CPU backend is a dev-dependency),
// so the README cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

pub use scheme::{Answer, Operations, ParamSummary, SchemeClient, SchemeServer, Shares};

/// What a caught panic carried (`panic!`'s message), for an error or a report.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
}

use thiserror::Error;

/// Errors of the protocol layer.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A malformed or mismatched message.
    #[error("wire: {0}")]
    Wire(#[from] wire::WireError),
    /// A call out of order, an unknown session, a bad request.
    #[error("protocol state: {0}")]
    State(String),
    /// The HE layer refused (parameters, noise, inputs).
    #[error(transparent)]
    He(#[from] fastquery_he::HeError),
    /// No layout fits, or a token id out of range.
    #[error(transparent)]
    Pack(#[from] fastquery_pack::PackError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] fastquery_backend::BackendError),
    /// A table that cannot be encoded (fixed point out of range, bad shape).
    #[error(transparent)]
    Table(#[from] fastquery_table::TableError),
    /// The quantizer refused (a budget below the cheapest allocation, bad arguments).
    #[error(transparent)]
    Quant(#[from] fastquery_quant::QuantError),
    /// An unknown scheme name.
    #[error("unknown scheme '{0}' (available: cheetah, iron, bumblebee, fastquery)")]
    UnknownScheme(String),
}
