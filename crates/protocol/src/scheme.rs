//! What every scheme provides, and the shares it produces.

use serde::Serialize;

use crate::ProtocolError;

/// Additive shares over `Z_{2^l}` of `tokens` rows of `d` channels, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shares {
    /// Rows (tokens).
    pub tokens: usize,
    /// Channels per row.
    pub d: usize,
    /// `l`.
    pub plain_bits: u32,
    /// `tokens * d` values mod `2^l`.
    pub values: Vec<u64>,
}

impl Shares {
    /// Zero shares of the given shape.
    pub fn zeros(tokens: usize, d: usize, plain_bits: u32) -> Self {
        Self { tokens, d, plain_bits, values: vec![0; tokens * d] }
    }

    /// `mine + other mod 2^l`: the quantized rows.
    pub fn reconstruct(&self, other: &Shares) -> Result<Vec<u64>, ProtocolError> {
        if (self.tokens, self.d, self.plain_bits) != (other.tokens, other.d, other.plain_bits) {
            return Err(ProtocolError::State("shares of different shapes".into()));
        }
        let mask = if self.plain_bits == 64 { u64::MAX } else { (1u64 << self.plain_bits) - 1 };
        Ok(self.values.iter().zip(&other.values).map(|(a, b)| a.wrapping_add(*b) & mask).collect())
    }
}

/// Parameters a report shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamSummary {
    /// Ring degree.
    pub n: usize,
    /// `log2 q` of the full chain (every prime any ciphertext or key uses).
    pub log2_q: f64,
    /// Limbs of the chain.
    pub limbs: usize,
    /// `log2 q'` after switching.
    pub log2_q_response: f64,
    /// `l` of `t = 2^l`.
    pub t: u32,
    /// Flooding margin in bits.
    pub sigma: u32,
    /// Low bits of `c0` dropped.
    pub drop_bits: u32,
    /// Computed noise slack after switching, in bits (the dropped `c0` bits spend it).
    pub noise_slack_bits: f64,
    /// The layout in words.
    pub layout: String,
}

/// One answered query: the response bytes and the server's shares.
pub type Answer = Result<(Vec<u8>, Shares), ProtocolError>;

/// The server half of a scheme, after the table is preprocessed.
pub trait SchemeServer: Send + Sync {
    /// The scheme's name.
    fn name(&self) -> &'static str;
    /// Parameters and layout.
    fn summary(&self) -> ParamSummary;
    /// Bytes of preprocessed table data held on the device.
    fn preprocess_bytes(&self) -> usize;
    /// Registers a client's setup message; returns its session id.
    fn open_session(&self, setup: &[u8]) -> Result<u64, ProtocolError>;
    /// Forgets a session and its keys (a networked server calls it when the connection ends).
    /// Unknown ids are ignored.
    fn close_session(&self, _session: u64) {}
    /// Sessions currently open.
    fn sessions(&self) -> usize {
        0
    }
    /// Answers a query of a session: the response bytes and the server's shares.
    fn answer(&self, session: u64, query: &[u8]) -> Result<(Vec<u8>, Shares), ProtocolError>;
    /// Answers several queries (of any sessions) at once, one result per query in order. A
    /// scheme whose table product is key-independent reads its table once for the whole
    /// batch; the default answers them one by one. One bad query fails only itself.
    fn answer_many(&self, queries: &[(u64, &[u8])]) -> Vec<Answer> {
        queries.iter().map(|(s, q)| self.answer(*s, q)).collect()
    }
    /// The exact bytes of a `tokens`-token request, where the scheme predicts them.
    fn predicted_bytes(&self, _tokens: usize) -> Option<crate::blocked::WireBytes> {
        None
    }
}

/// The client half: a state machine `Fresh -> (setup) -> Ready -> (query) -> Waiting ->
/// (decode) -> Ready`. Calls out of order are errors.
pub trait SchemeClient: Send {
    /// The one-time setup message (keys).
    fn setup(&mut self) -> Result<Vec<u8>, ProtocolError>;
    /// A query for token ids.
    fn query(&mut self, ids: &[usize]) -> Result<Vec<u8>, ProtocolError>;
    /// The client's shares from the response to the last query.
    fn decode(&mut self, response: &[u8]) -> Result<Shares, ProtocolError>;
}

/// Client states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ClientState {
    Fresh,
    Ready,
    Waiting { ids: Vec<usize> },
}
