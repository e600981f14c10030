//! Scheme `cheetah`: Cheetah's HomFC layout and parameters, per token, in this engine.
//!
//! N = 4096, a 109-bit chain (30 + 30 + 27 + 22 bits), t = 2^37, the table in fixed point with
//! 12 fractional bits, responses switched to the first two primes (about 60 bits), low bits of
//! `c0` dropped, every coefficient but the `d0` outputs of each response dropped.

use std::sync::Arc;

use fastquery_backend::Backend;
use fastquery_he::{ParamSpec, Params};
use fastquery_pack::CheetahLayout;
use fastquery_table::IntTable;

use crate::{
    ProtocolError,
    blocked::{BlockedClient, BlockedServer, Design},
};

/// Wire id of the scheme.
pub const SCHEME_ID: u8 = 1;

/// Cheetah's parameters with share ring `2^plain_bits` (37 in Cheetah).
pub fn params(plain_bits: u32) -> Result<Params, ProtocolError> {
    Ok(Params::new(ParamSpec {
        n: 4096,
        prime_bits: vec![30, 30, 27, 22],
        response_limbs: 2,
        plain_bits,
        flood_bits: 40,
        special_bits: 0,
    })?)
}

/// The design for an `m x d` table of `table_bits` signed bits.
pub fn design(m: usize, d: usize, table_bits: u32, plain_bits: u32) -> Result<Design, ProtocolError> {
    let params = Arc::new(params(plain_bits)?);
    let layout = CheetahLayout::choose(m, d, params.n())?;
    Design::new(SCHEME_ID, "cheetah", params, Arc::new(layout), None, table_bits)
}

/// The server.
pub type CheetahServer<B> = BlockedServer<B>;
/// The client.
pub type CheetahClient = BlockedClient;

/// The server for `table` (preprocessed once).
pub fn server<B: Backend>(
    backend: Arc<B>,
    table: &IntTable,
    plain_bits: u32,
) -> Result<CheetahServer<B>, ProtocolError> {
    BlockedServer::new(backend, table, design(table.m(), table.d(), table.bits(), plain_bits)?)
}

/// A client for an `m x d` table of `table_bits` signed bits.
pub fn client(m: usize, d: usize, table_bits: u32, plain_bits: u32) -> Result<CheetahClient, ProtocolError> {
    BlockedClient::new(design(m, d, table_bits, plain_bits)?, d)
}
