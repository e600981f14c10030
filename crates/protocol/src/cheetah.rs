//! Scheme `cheetah`: Cheetah's HomFC layout and parameters, per token, in this engine.
//!
//! N = 4096, a 109-bit chain (30 + 30 + 27 + 22 bits), t = 2^37, the table in fixed point with
//! 12 fractional bits, responses switched to the first two primes (about 60 bits), low bits of
//! `c0` dropped, every coefficient but the `d0` outputs of each response dropped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use fastquery_backend::{Backend, MacDims, Ntt, Polys, Ring, Shape};
use fastquery_he::{
    ParamSpec, Params,
    client::Client,
    noise::{NoiseReport, Workload, analyse},
    server::{ServerKey, encode_plaintexts_with, expand_queries, finish, load_public_key},
};
use fastquery_pack::CheetahLayout;
use fastquery_table::IntTable;

use crate::{
    ProtocolError,
    messages::{
        Limits, decode_query, decode_response, decode_setup, encode_query, encode_response, encode_setup,
    },
    scheme::{ClientState, ParamSummary, SchemeClient, SchemeServer, Shares},
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
    })?)
}

/// What both sides derive from the public shape and parameters.
#[derive(Clone, Debug)]
struct Common {
    params: Arc<Params>,
    layout: CheetahLayout,
    noise: NoiseReport,
    /// Kept coefficient positions of each output block.
    positions: Vec<Vec<usize>>,
}

impl Common {
    fn new(m: usize, d: usize, table_bits: u32, plain_bits: u32) -> Result<Self, ProtocolError> {
        let params = Arc::new(params(plain_bits)?);
        let layout = CheetahLayout::choose(m, d, params.n())?;
        let noise = analyse(
            &params,
            Workload { terms: layout.noise_terms(), w_max: 1u64 << (table_bits - 1), input_weight: 1 },
        )?;
        let positions = (0..layout.out_blocks())
            .map(|j| layout.output_positions(j).into_iter().map(|p| p.0).collect())
            .collect();
        Ok(Self { params, layout, noise, positions })
    }

    fn kept(&self, tokens: usize) -> Vec<usize> {
        (0..tokens).flat_map(|_| self.positions.iter().map(Vec::len)).collect()
    }

    fn summary(&self) -> ParamSummary {
        let p = &self.params;
        ParamSummary {
            n: p.n(),
            log2_q: p.log2_q(),
            limbs: p.limbs(),
            log2_q_response: p.log2_q_response(),
            t: p.plain_bits(),
            sigma: p.flood_bits(),
            drop_bits: self.noise.drop_bits,
            noise_slack_bits: self.noise.slack_bits(),
            layout: format!(
                "cheetah split d0={} d1={}: {} query + {} response ciphertexts per token",
                self.layout.d0,
                self.layout.d1,
                self.layout.in_blocks(),
                self.layout.out_blocks()
            ),
        }
    }
}

/// The server: preprocessed plaintexts on the device, and per-session public keys.
pub struct CheetahServer<B: Backend> {
    common: Common,
    ring: Ring<B>,
    plaintexts: Polys<B, Ntt>,
    sessions: Mutex<HashMap<u64, Arc<ServerKey<B>>>>,
    next: Mutex<u64>,
    limits: Limits,
    d: usize,
}

impl<B: Backend> std::fmt::Debug for CheetahServer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheetahServer").field("layout", &self.common.layout).finish_non_exhaustive()
    }
}

impl<B: Backend> CheetahServer<B> {
    /// Preprocesses `table` (once): every weight block encoded and transformed on `backend`.
    pub fn new(backend: Arc<B>, table: &IntTable, plain_bits: u32) -> Result<Self, ProtocolError> {
        let common = Common::new(table.m(), table.d(), table.bits(), plain_bits)?;
        let ring = Ring::new(backend, common.params.ring().clone())?;
        let l = common.layout;
        let (ib, ob) = (l.in_blocks(), l.out_blocks());
        let plaintexts = encode_plaintexts_with(&ring, &common.params, ib * ob, |idx, poly| {
            l.weight_block(idx / ob, idx % ob, |k, ch| i64::from(table.get(k, ch)), poly);
        })?;
        Ok(Self {
            common,
            ring,
            plaintexts,
            sessions: Mutex::new(HashMap::new()),
            next: Mutex::new(1),
            limits: Limits::default(),
            d: table.d(),
        })
    }

    fn session(&self, id: u64) -> Result<Arc<ServerKey<B>>, ProtocolError> {
        let s = self.sessions.lock().map_err(|_| ProtocolError::State("session table poisoned".into()))?;
        s.get(&id).cloned().ok_or_else(|| ProtocolError::State(format!("unknown session {id}")))
    }
}

impl<B: Backend> SchemeServer for CheetahServer<B> {
    fn name(&self) -> &'static str {
        "cheetah"
    }

    fn summary(&self) -> ParamSummary {
        self.common.summary()
    }

    fn preprocess_bytes(&self) -> usize {
        self.plaintexts.shape().words(self.common.params.n()) * 4
    }

    fn open_session(&self, setup: &[u8]) -> Result<u64, ProtocolError> {
        let pk = decode_setup(&self.common.params, SCHEME_ID, setup, self.limits)?;
        let key = Arc::new(load_public_key(&self.ring, &self.common.params, &pk)?);
        let mut next =
            self.next.lock().map_err(|_| ProtocolError::State("session counter poisoned".into()))?;
        let id = *next;
        *next += 1;
        self.sessions
            .lock()
            .map_err(|_| ProtocolError::State("session table poisoned".into()))?
            .insert(id, key);
        Ok(id)
    }

    fn answer(&self, session: u64, query: &[u8]) -> Result<(Vec<u8>, Shares), ProtocolError> {
        let mut trace = crate::trace::Phases::new("cheetah.answer");
        let key = self.session(session)?;
        let c = &self.common;
        let (params, l) = (&c.params, c.layout);
        let (ib, ob) = (l.in_blocks(), l.out_blocks());
        let (tokens, cts) = decode_query(params, SCHEME_ID, query, ib, self.limits)?;
        trace.mark("decode");
        let a = expand_queries(&self.ring, params, &cts, ib)?;
        trace.mark("expand");
        let limbs = params.limbs();
        let mut out: Polys<B, Ntt> = self.ring.zeros(Shape::new(2 * tokens * ob, limbs))?;
        self.ring.mac(
            &mut out,
            &a,
            &self.plaintexts,
            MacDims { rows: 2 * tokens, inner: ib, cols: ob },
            false,
        )?;
        self.ring.backend().synchronize()?;
        trace.mark("mac");
        // Rows of `out`: token t's c0s then its c1s. Split them for the finishing steps, on the
        // device.
        let out = self.ring.inverse(out)?;
        let shape = Shape::new(tokens * ob, limbs);
        let (mut c0, mut c1) = (self.ring.zeros(shape)?, self.ring.zeros(shape)?);
        for t in 0..tokens {
            self.ring.copy_polys(&out, 2 * t * ob, &mut c0, t * ob, ob)?;
            self.ring.copy_polys(&out, (2 * t + 1) * ob, &mut c1, t * ob, ob)?;
        }
        let positions: Vec<Vec<usize>> = (0..tokens).flat_map(|_| c.positions.iter().cloned()).collect();
        trace.mark("split");
        let fin = finish(&self.ring, params, &key, &c.noise, c0, c1, &positions, &mut rand::rng())?;
        trace.mark("finish");
        let mut shares = Shares::zeros(tokens, self.d, params.plain_bits());
        for (idx, s) in fin.shares.iter().enumerate() {
            let (t, j) = (idx / ob, idx % ob);
            for ((_, ch), &v) in l.output_positions(j).iter().zip(s) {
                shares.values[t * self.d + ch] = v;
            }
        }
        let resp = encode_response(params, SCHEME_ID, c.noise.drop_bits, &fin.responses);
        trace.mark("encode");
        Ok((resp, shares))
    }
}

/// The client.
pub struct CheetahClient {
    common: Common,
    he: Client,
    state: ClientState,
    limits: Limits,
    d: usize,
}

impl std::fmt::Debug for CheetahClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheetahClient").field("state", &self.state).finish_non_exhaustive()
    }
}

impl CheetahClient {
    /// A client for an `m x d` table of `table_bits` signed bits, share ring `2^plain_bits`.
    pub fn new(m: usize, d: usize, table_bits: u32, plain_bits: u32) -> Result<Self, ProtocolError> {
        let common = Common::new(m, d, table_bits, plain_bits)?;
        let he = Client::new(common.params.clone())?;
        Ok(Self { common, he, state: ClientState::Fresh, limits: Limits::default(), d })
    }
}

impl SchemeClient for CheetahClient {
    fn setup(&mut self) -> Result<Vec<u8>, ProtocolError> {
        if self.state != ClientState::Fresh {
            return Err(ProtocolError::State("setup was already sent".into()));
        }
        self.state = ClientState::Ready;
        Ok(encode_setup(&self.common.params, SCHEME_ID, &self.he.public_key()))
    }

    fn query(&mut self, ids: &[usize]) -> Result<Vec<u8>, ProtocolError> {
        if self.state != ClientState::Ready {
            return Err(ProtocolError::State("query before setup, or while a response is pending".into()));
        }
        if ids.is_empty() || ids.len() > self.limits.max_tokens {
            return Err(ProtocolError::State(format!(
                "{} tokens (1..={} allowed)",
                ids.len(),
                self.limits.max_tokens
            )));
        }
        let mut msgs = Vec::with_capacity(ids.len() * self.common.layout.in_blocks());
        for &k in ids {
            msgs.extend(self.common.layout.query_messages(k)?);
        }
        let cts = self.he.encrypt_sparse(&msgs)?;
        self.state = ClientState::Waiting { ids: ids.to_vec() };
        Ok(encode_query(&self.common.params, SCHEME_ID, ids.len(), &cts))
    }

    fn decode(&mut self, response: &[u8]) -> Result<Shares, ProtocolError> {
        let ClientState::Waiting { ids } = &self.state else {
            return Err(ProtocolError::State("no query is pending".into()));
        };
        let tokens = ids.len();
        let c = &self.common;
        let (drop_bits, cts) = decode_response(&c.params, SCHEME_ID, response, &c.kept(tokens), self.limits)?;
        let ob = c.layout.out_blocks();
        let mut shares = Shares::zeros(tokens, self.d, c.params.plain_bits());
        for (idx, ct) in cts.iter().enumerate() {
            let (t, j) = (idx / ob, idx % ob);
            let values = self.he.decrypt_response(ct, &c.positions[j], drop_bits)?;
            for ((_, ch), v) in c.layout.output_positions(j).into_iter().zip(values) {
                shares.values[t * self.d + ch] = v;
            }
        }
        self.state = ClientState::Ready;
        Ok(shares)
    }
}
