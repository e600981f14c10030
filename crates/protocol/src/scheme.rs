//! What every scheme provides, and the shares it produces.

use rayon::prelude::*;
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
    /// Bits per coefficient of a rounded `c1` (0: sent whole, as residues).
    pub c1_bits: u32,
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
    /// The operation counts of a `tokens`-token request, where the design states them (its
    /// cost model's basis; the bench prints them beside the counted work).
    fn predicted_operations(&self, _tokens: usize) -> Option<Operations> {
        None
    }
}

/// A design's operation counts for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Operations {
    /// Ciphertext key switches (expansion, RGSW conversion, packing).
    pub key_switches: usize,
    /// External products (each two key-switch-sized digit products).
    pub external_products: usize,
    /// Coefficient products of the table product.
    pub mac_products: usize,
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

/// `(coefficient, token, channel)` of every kept coefficient, per response ciphertext.
pub(crate) type Positions = Vec<Vec<(usize, usize, usize)>>;

/// The open sessions of a server: keys by id (ids count up from 1 and are never reused).
pub(crate) struct Sessions<K> {
    map: std::sync::Mutex<std::collections::HashMap<u64, std::sync::Arc<K>>>,
    next: std::sync::Mutex<u64>,
}

impl<K> Sessions<K> {
    pub(crate) fn new() -> Self {
        Self { map: std::sync::Mutex::new(Default::default()), next: std::sync::Mutex::new(1) }
    }

    /// Stores `keys` under a fresh id.
    pub(crate) fn open(&self, keys: K) -> Result<u64, ProtocolError> {
        let mut next =
            self.next.lock().map_err(|_| ProtocolError::State("session counter poisoned".into()))?;
        let id = *next;
        *next += 1;
        self.map
            .lock()
            .map_err(|_| ProtocolError::State("session table poisoned".into()))?
            .insert(id, std::sync::Arc::new(keys));
        Ok(id)
    }

    /// The keys of session `id`.
    pub(crate) fn get(&self, id: u64) -> Result<std::sync::Arc<K>, ProtocolError> {
        let s = self.map.lock().map_err(|_| ProtocolError::State("session table poisoned".into()))?;
        s.get(&id).cloned().ok_or_else(|| ProtocolError::State(format!("unknown session {id}")))
    }

    /// Forgets session `id` and returns its keys (`None` for an unknown id, or one another call
    /// closed first: of two calls at once, one gets the keys).
    pub(crate) fn close(&self, id: u64) -> Option<std::sync::Arc<K>> {
        self.map.lock().ok()?.remove(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().map_or(0, |s| s.len())
    }
}

/// Shares of `tokens` rows of `d` channels from per-ciphertext values at `positions`.
pub(crate) fn place_shares(
    tokens: usize,
    d: usize,
    plain_bits: u32,
    positions: &Positions,
    values: &[Vec<u64>],
) -> Shares {
    let mut shares = Shares::zeros(tokens, d, plain_bits);
    for (pos, vals) in positions.iter().zip(values) {
        for (&(_, t, ch), &v) in pos.iter().zip(vals) {
            shares.values[t * d + ch] = v;
        }
    }
    shares
}

/// The client side common to every scheme: the checks before a query, and the decoding of a
/// response into the client's shares.
pub(crate) fn check_query(
    state: &ClientState,
    tokens: usize,
    max_tokens: usize,
) -> Result<(), ProtocolError> {
    if *state != ClientState::Ready {
        return Err(ProtocolError::State("query before setup, or while a response is pending".into()));
    }
    if tokens == 0 || tokens > max_tokens {
        return Err(ProtocolError::State(format!("{tokens} tokens (1..={max_tokens} allowed)")));
    }
    Ok(())
}

/// Decrypts a response whose ciphertexts keep `positions`, groups of `share` sharing one `c1`
/// ([`fastquery_he::share`]; 1: none), into the client's shares.
pub(crate) fn decode_shares(
    he: &fastquery_he::client::Client,
    scheme: u8,
    response: &[u8],
    (positions, sharing): (&Positions, fastquery_he::share::Sharing),
    (tokens, d): (usize, usize),
    limits: crate::messages::Limits,
) -> Result<Shares, ProtocolError> {
    let params = he.params();
    let share = sharing.group();
    let kept: Vec<usize> = positions.iter().map(Vec::len).collect();
    let (drop_bits, cts) =
        crate::messages::decode_response(params, scheme, response, (&kept, sharing), limits)?;
    // One task per response ciphertext (each is a transform pair and a product of its own).
    let values = cts
        .par_iter()
        .zip(positions.par_iter())
        .enumerate()
        .map(|(i, (ct, pos))| {
            let coeffs: Vec<usize> = pos.iter().map(|p| p.0).collect();
            if !sharing.keyed() {
                return he.decrypt_response(ct, &coeffs, drop_bits);
            }
            // Member i % share of the group whose first record carries c1.
            he.decrypt_shared(&ct.c0, &cts[i - i % share].c1.residues(params)?, i % share, &coeffs, drop_bits)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(place_shares(tokens, d, params.plain_bits(), positions, &values))
}
