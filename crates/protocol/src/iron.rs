//! Scheme `iron`: Iron's 3-D blocking over tokens (Hao et al., NeurIPS 2022) with Cheetah's
//! parameters. One query carries the whole batch: ciphertexts are shared by `nw` tokens, so
//! for T tokens it sends `ceil(T/nw) (ceil(m/kw) + ceil(d/mw))` ciphertexts instead of
//! Cheetah's `T (ceil(m/d1) + ceil(d/d0))`. The blocking is chosen for the batch size the
//! server is built for; smaller batches use part of a group.

use std::sync::Arc;

use fastquery_pack::IronLayout;

use crate::{ProtocolError, blocked::Design, cheetah};

/// Wire id of the scheme.
pub const SCHEME_ID: u8 = 2;

/// The design for an `m x d` table of `table_bits` signed bits and batches of `tokens`.
pub fn design(
    m: usize,
    d: usize,
    table_bits: u32,
    plain_bits: u32,
    tokens: usize,
) -> Result<Design, ProtocolError> {
    let params = Arc::new(cheetah::params(plain_bits)?);
    let layout = IronLayout::choose(m, d, params.n(), tokens)?;
    Design::new(SCHEME_ID, "iron", params, Arc::new(layout), None, table_bits)
}
