//! The machinery shared by the coefficient-encoded schemes (`cheetah`, `iron`, `bumblebee`): a
//! [`BlockLayout`] of the lookup, optional response packing with Galois keys, and the server's
//! and client's state machines around them. A scheme is a [`Design`]: its parameters, layout
//! and packing.

use std::sync::Arc;

use fastquery_backend::{Backend, Coeff, MacDims, MacOperand, Ntt, Polys, Ring, Shape};
use fastquery_he::{
    Params,
    client::Client,
    galois::{
        Ciphertexts, ServerGaloisKey, load_galois_key, pack_batch, pack_strided_gathered, packing_elements,
    },
    noise::{NoiseReport, Workload, analyse},
    server::{
        Outputs, ServerKey, encode_mac_operand, encode_plaintexts_with, expand_queries, finish_outputs,
        load_public_key,
    },
    share::Sharing,
};
use fastquery_pack::BlockLayout;
use fastquery_table::IntTable;

use crate::{
    ProtocolError,
    messages::{Limits, decode_query, decode_setup, encode_query, encode_response, encode_setup},
    scheme::{
        ClientState, ParamSummary, Positions, SchemeClient, SchemeServer, Sessions, Shares, check_query,
        decode_shares, place_shares,
    },
};

/// Response packing: `count` product ciphertexts per response ciphertext, with Galois keys of
/// `digit_bits`-bit gadget digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// Product ciphertexts per packed ciphertext (a power of two).
    pub count: usize,
    /// Gadget digit width of the Galois keys.
    pub digit_bits: u32,
}

/// Bytes of the three messages of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WireBytes {
    /// The one-time setup (keys).
    pub setup: usize,
    /// The query.
    pub query: usize,
    /// The response.
    pub response: usize,
}

impl WireBytes {
    /// What one request of `tokens` tokens costs on a link over a session of `session` tokens:
    /// its query and response, and its part of the setup, `setup * tokens / session` rounded up
    /// (the whole setup where one request holds the session; a session of 0 tokens counts as
    /// one). `None`: a session without end, where the setup is paid once and its part is
    /// nothing.
    pub fn per_request(&self, tokens: usize, session: Option<usize>) -> u64 {
        let own = (self.query + self.response) as u64;
        match session {
            None => own,
            Some(s) => {
                let s = s.max(1) as u64;
                let part = (self.setup as u64 * (tokens as u64).min(s)).div_ceil(s);
                own + part
            }
        }
    }

    /// What a design costs on a link over a session of `session` tokens of which `decode`
    /// arrive one per request (the steps of autoregressive decoding), the rest in requests of
    /// `tokens` (the prompt): its setup, the full requests' query and response (`self`, for
    /// `tokens` tokens), and the one-token requests' (`one()`, asked for only where there are
    /// some). Without `decode` tokens it is [`Self::per_request`], which ranks alike; `None`:
    /// the query and response of a full request, as there.
    pub fn over_session(
        &self,
        one: impl FnOnce() -> WireBytes,
        tokens: usize,
        session: Option<usize>,
        decode: usize,
    ) -> u64 {
        match session {
            Some(s) if decode > 0 => self.session_total(&one(), tokens, s, decode),
            _ => self.per_request(tokens, session),
        }
    }

    /// Every byte of a session of `session` tokens of which `decode` arrive one per request
    /// (`one`'s query and response each) and the rest in requests of `tokens` (`self`'s each;
    /// a last, shorter prompt request counted as a full one), with the setup once. A session
    /// that runs them sends exactly this where the prompt fills its requests, and no more
    /// otherwise (`harness::run_session` measures it).
    pub fn session_total(&self, one: &WireBytes, tokens: usize, session: usize, decode: usize) -> u64 {
        let (full, decode) = session_requests(tokens, session, decode);
        self.setup as u64
            + full as u64 * (self.query + self.response) as u64
            + decode as u64 * (one.query + one.response) as u64
    }
}

/// The requests of a session of `session` tokens, `decode` of them one per request and the
/// rest in requests of `tokens` (a last, shorter prompt request counted as a full one): the
/// full requests and the one-token requests.
pub fn session_requests(tokens: usize, session: usize, decode: usize) -> (usize, usize) {
    let decode = decode.min(session);
    ((session - decode).div_ceil(tokens.max(1)), decode)
}

/// What both parties derive from the public shape and parameters.
#[derive(Clone, Debug)]
pub struct Design {
    /// Wire id of the scheme.
    pub id: u8,
    /// Name in reports.
    pub name: &'static str,
    /// Parameters.
    pub params: Arc<Params>,
    /// The layout.
    pub layout: Arc<dyn BlockLayout>,
    /// Packing of the products, if any.
    pub packing: Option<Packing>,
    /// The noise bounds.
    pub noise: NoiseReport,
}

impl Design {
    /// Computes the noise bounds (with the key-switching noise of packing, when any) for a
    /// table of `table_bits` signed bits.
    pub fn new(
        id: u8,
        name: &'static str,
        params: Arc<Params>,
        layout: Arc<dyn BlockLayout>,
        packing: Option<Packing>,
        table_bits: u32,
    ) -> Result<Self, ProtocolError> {
        let extra = packing.map_or(0.0, |p| {
            (p.count as f64 - 1.0) * fastquery_he::galois::keyswitch_bound(&params, p.digit_bits)
        });
        let noise = analyse(
            &params,
            Workload {
                terms: layout.noise_terms(),
                w_max: 1u64 << (table_bits - 1),
                input_weight: layout.input_weight(),
                extra,
            },
        )?;
        Ok(Self { id, name, params, layout, packing, noise })
    }

    /// The same design with its noise slack spent on `c1` as well as on `c0`
    /// ([`NoiseReport::with_rounded_c1`]): a response keeps a few coefficients of `c0` and all
    /// of `c1`, so rounding `c1` to fewer bits saves more bytes than dropping bits of `c0`
    /// (at llama-7b, `fastquery-lan`'s split: `c1` at 47 bits instead of 54, 6.5% fewer bytes
    /// per token, for about 50 ns of the server's time per coefficient: the design search
    /// offers both and its objective chooses). Unchanged where sending `c1` whole is no
    /// larger. For fastquery's designs; the baselines keep the responses of their papers.
    pub fn with_rounded_c1(mut self) -> Self {
        let kept = self.kept(self.layout.group()).into_iter().max().unwrap_or(0);
        self.noise = self.noise.with_rounded_c1(&self.params, kept, Sharing::NONE);
        self
    }

    fn galois_elements(&self) -> Vec<usize> {
        self.packing.map_or(Vec::new(), |p| packing_elements(self.params.n(), p.count))
    }

    fn key_bits(&self) -> u32 {
        self.packing.map_or(0, |p| p.digit_bits)
    }

    /// Groups of a query of `tokens` tokens.
    pub fn groups(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.layout.group())
    }

    /// Response ciphertexts per group.
    pub fn responses_per_group(&self) -> usize {
        let out = self.layout.out_blocks();
        self.packing.map_or(out, |p| out.div_ceil(p.count))
    }

    /// How many `c0` coefficients each response ciphertext of a `tokens`-token request keeps.
    /// Counted, not listed: the design search asks this of thousands of designs, and listing
    /// (and sorting) the positions of 128 tokens took minutes.
    pub fn kept(&self, tokens: usize) -> Vec<usize> {
        let (g, out) = (self.layout.group(), self.layout.out_blocks());
        let mut kept = Vec::with_capacity(self.groups(tokens) * self.responses_per_group());
        for group in 0..self.groups(tokens) {
            let size = g.min(tokens - group * g);
            let count = |j| self.layout.output_count(j, size);
            match self.packing {
                None => kept.extend((0..out).map(count)),
                Some(p) => kept.extend(
                    (0..self.responses_per_group())
                        .map(|k| (k * p.count..((k + 1) * p.count).min(out)).map(count).sum::<usize>()),
                ),
            }
        }
        kept
    }

    /// `(coefficient, token, channel)` of each response ciphertext of a `tokens`-token query.
    fn positions(&self, tokens: usize) -> Positions {
        let g = self.layout.group();
        let mut out = Vec::new();
        for group in 0..self.groups(tokens) {
            let size = g.min(tokens - group * g);
            let shift = |v: Vec<(usize, usize, usize)>, i: usize| {
                v.into_iter().map(move |(p, r, ch)| (p + i, group * g + r, ch))
            };
            match self.packing {
                None => {
                    for j in 0..self.layout.out_blocks() {
                        out.push(shift(self.layout.output_positions(j, size), 0).collect());
                    }
                }
                Some(p) => {
                    for packed in 0..self.responses_per_group() {
                        let mut v: Vec<(usize, usize, usize)> = (0..p.count)
                            .map(|i| (packed * p.count + i, i))
                            .filter(|&(j, _)| j < self.layout.out_blocks())
                            .flat_map(|(j, i)| shift(self.layout.output_positions(j, size), i))
                            .collect();
                        v.sort_unstable();
                        out.push(v);
                    }
                }
            }
        }
        out
    }

    /// The exact bytes on the wire of a `tokens`-token request under this design: the setup,
    /// the query and the response (the message formats of [`crate::messages`], headers
    /// included). Tests check them against the encoded messages.
    pub fn predicted_bytes(&self, tokens: usize) -> WireBytes {
        use crate::{messages, wire::HEADER_BYTES};
        let p = &self.params;
        let setup = messages::setup_bytes(p, self.galois_elements().len(), self.key_bits(), Sharing::NONE);
        let query = HEADER_BYTES
            + 4
            + self.groups(tokens) * self.layout.in_blocks() * messages::query_record_bytes(p);
        let response = messages::response_bytes(p, &self.noise, &self.kept(tokens), Sharing::NONE);
        WireBytes { setup, query, response }
    }

    /// Key switches the server runs per group (packing), for cost models.
    pub fn keyswitches_per_group(&self) -> usize {
        self.packing.map_or(0, |p| self.responses_per_group() * (p.count - 1))
    }

    /// A summary for reports.
    pub fn summary(&self) -> ParamSummary {
        let p = &self.params;
        let packing = self.packing.map_or(String::new(), |pk| {
            format!(
                ", {} products packed per response (Galois keys of {}-bit digits)",
                pk.count, pk.digit_bits
            )
        });
        ParamSummary {
            n: p.n(),
            log2_q: p.log2_q(),
            limbs: p.limbs(),
            log2_q_response: p.log2_q_response(),
            t: p.plain_bits(),
            sigma: p.flood_bits(),
            drop_bits: self.noise.drop_bits,
            c1_bits: self.noise.c1_bits,
            noise_slack_bits: self.noise.slack_bits(),
            layout: format!(
                "{}: {} query + {} response ciphertexts per group of {} token(s){packing}",
                self.layout.describe(),
                self.layout.in_blocks(),
                self.responses_per_group(),
                self.layout.group()
            ),
        }
    }
}

/// A request's table products ([`BlockedServer::product_rows`]).
enum Rows<B: Backend> {
    /// Transformed back, for the packing.
    Coeff(Polys<B, Coeff>),
    /// In the NTT domain, for the finish.
    Ntt(Polys<B, Ntt>),
}

/// A session's keys on the server.
struct SessionKeys<B: Backend> {
    pk: ServerKey<B>,
    galois: Vec<ServerGaloisKey<B>>,
}

/// Bytes of NTT-form plaintexts a server preprocesses at most (`FASTQUERY_PREPROCESS_BUDGET`,
/// in bytes, overrides it). Past it, plaintexts are encoded per request, a block of columns at
/// a time: Iron's token blocking at 8 LLaMA-7B tokens would need 16.8 GB preprocessed, more
/// than a 24 GB machine holds next to everything else.
pub const PREPROCESS_BUDGET: usize = 6 << 30;

fn preprocess_budget() -> usize {
    std::env::var("FASTQUERY_PREPROCESS_BUDGET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PREPROCESS_BUDGET)
}

/// The table as the server holds it.
enum Plaintexts<B: Backend> {
    /// Every block encoded once, NTT form, in the backend's layout for the product.
    Preprocessed(MacOperand<B>),
    /// The integer table, encoded per request in groups of `cols` output blocks.
    Streamed { table: IntTable, cols: usize },
}

/// The server of a blocked scheme: preprocessed plaintexts on the device, per-session keys.
pub struct BlockedServer<B: Backend> {
    design: Design,
    ring: Ring<B>,
    plaintexts: Plaintexts<B>,
    sessions: Sessions<SessionKeys<B>>,
    limits: Limits,
    d: usize,
}

impl<B: Backend> std::fmt::Debug for BlockedServer<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockedServer").field("scheme", &self.design.name).finish_non_exhaustive()
    }
}

impl<B: Backend> BlockedServer<B> {
    /// Preprocesses `table` once: every plaintext block encoded and transformed on `backend`.
    pub fn new(backend: Arc<B>, table: &IntTable, design: Design) -> Result<Self, ProtocolError> {
        Self::with_budget(backend, table, design, preprocess_budget())
    }

    /// Like [`Self::new`], preprocessing at most `budget` bytes of plaintexts (beyond it they
    /// are encoded per request).
    pub fn with_budget(
        backend: Arc<B>,
        table: &IntTable,
        design: Design,
        budget: usize,
    ) -> Result<Self, ProtocolError> {
        let ring = Ring::new(backend, design.params.ring().clone())?;
        let l = design.layout.clone();
        let (ib, ob) = (l.in_blocks(), l.out_blocks());
        let (n, limbs) = (design.params.n(), design.params.limbs());
        let bytes = ib * ob * n * limbs * 4;
        let plaintexts = if bytes <= budget {
            let pts = encode_mac_operand(&ring, &design.params, (ib, ob), |idx, poly| {
                l.weight_block(idx / ob, idx % ob, &|k, ch| i64::from(table.get(k, ch)), poly);
            })?;
            Plaintexts::Preprocessed(pts)
        } else {
            let cols = (budget / 4 / (ib * n * limbs * 4)).clamp(1, ob);
            Plaintexts::Streamed { table: table.clone(), cols }
        };
        Ok(Self {
            design,
            ring,
            plaintexts,
            sessions: Sessions::new(),
            limits: Limits::default(),
            d: table.d(),
        })
    }

    fn session(&self, id: u64) -> Result<Arc<SessionKeys<B>>, ProtocolError> {
        self.sessions.get(id)
    }

    /// The products of `groups` groups whose expanded queries are `a` (`2 * groups x
    /// in_blocks`), in one buffer: group `g`'s `out_blocks` first halves (`c0`) from row
    /// `2 g out_blocks`, then its second halves (`c1`). In coefficient form where they are
    /// packed; otherwise in the NTT domain, where the finish adds its encryption of zero before
    /// the one inverse transform ([`Outputs::Ntt`]).
    fn product_rows(&self, a: &Polys<B, Ntt>, groups: usize) -> Result<Rows<B>, ProtocolError> {
        let (params, l) = (&self.design.params, &self.design.layout);
        let (ib, ob) = (l.in_blocks(), l.out_blocks());
        let limbs = params.limbs();
        let mut out: Polys<B, Ntt> = self.ring.zeros(Shape::new(2 * groups * ob, limbs))?;
        match &self.plaintexts {
            Plaintexts::Preprocessed(pts) => {
                self.ring.mac_laid_out(&mut out, a, pts, 2 * groups, false)?;
            }
            Plaintexts::Streamed { table, cols } => {
                // Output blocks [j0, j0 + w): encode their plaintexts, multiply, place.
                for j0 in (0..ob).step_by(*cols) {
                    let w = (*cols).min(ob - j0);
                    let pts = encode_plaintexts_with(&self.ring, params, ib * w, |idx, poly| {
                        l.weight_block(idx / w, j0 + idx % w, &|k, ch| i64::from(table.get(k, ch)), poly);
                    })?;
                    let mut part: Polys<B, Ntt> = self.ring.zeros(Shape::new(2 * groups * w, limbs))?;
                    self.ring.mac(
                        &mut part,
                        a,
                        &pts,
                        MacDims { rows: 2 * groups, inner: ib, cols: w },
                        false,
                    )?;
                    for r in 0..2 * groups {
                        self.ring.copy_polys(&part, r * w, &mut out, r * ob + j0, w)?;
                    }
                }
            }
        }
        self.ring.backend().synchronize()?;
        Ok(match self.design.packing {
            Some(_) => Rows::Coeff(self.ring.inverse(out)?),
            None => Rows::Ntt(out),
        })
    }

    /// The response ciphertexts of groups `first..first + groups` of the product rows: each
    /// group's products packed straight from the rows (zero ciphertexts pad the last pack), or,
    /// without packing, the products as ciphertexts (in the NTT domain).
    fn pack_rows(
        &self,
        keys: &SessionKeys<B>,
        rows: &Rows<B>,
        first: usize,
        groups: usize,
    ) -> Result<Outputs<B>, ProtocolError> {
        let ob = self.design.layout.out_blocks();
        match (rows, self.design.packing) {
            (Rows::Ntt(rows), None) => {
                let shape = Shape::new(groups * ob, rows.shape().limbs);
                let (mut c0, mut c1) = (self.ring.zeros(shape)?, self.ring.zeros(shape)?);
                for g in 0..groups {
                    self.ring.copy_polys(rows, 2 * (first + g) * ob, &mut c0, g * ob, ob)?;
                    self.ring.copy_polys(rows, (2 * (first + g) + 1) * ob, &mut c1, g * ob, ob)?;
                }
                Ok(Outputs::Ntt(Ciphertexts { c0, c1 }))
            }
            (Rows::Coeff(rows), Some(p)) => {
                Ok(Outputs::Coeff(self.pack_groups(keys, rows, p, first, groups)?))
            }
            _ => Err(ProtocolError::State("product rows in the wrong form for the design's packing".into())),
        }
    }

    /// [`Self::pack_rows`] with packing: the groups' products, in coefficient form, packed
    /// `p.count` to a response.
    fn pack_groups(
        &self,
        keys: &SessionKeys<B>,
        rows: &Polys<B, Coeff>,
        p: Packing,
        first: usize,
        groups: usize,
    ) -> Result<Ciphertexts<B>, ProtocolError> {
        let ob = self.design.layout.out_blocks();
        let limbs = rows.shape().limbs;
        let per = self.design.responses_per_group();
        let params = &self.design.params;
        let batch = pack_batch(params, limbs);
        let mut out = Ciphertexts::zeros(&self.ring, groups * per, limbs)?;
        for g in first..first + groups {
            // Item i of the group's packs is product i (none past out_blocks: zeros).
            let mut gather = |dst: &mut Ciphertexts<B>, at: usize, from: usize, count: usize| {
                let here = ob.saturating_sub(from).min(count);
                if here > 0 {
                    self.ring.copy_polys(rows, 2 * g * ob + from, &mut dst.c0, at, here)?;
                    self.ring.copy_polys(rows, (2 * g + 1) * ob + from, &mut dst.c1, at, here)?;
                }
                Ok(())
            };
            let packed = pack_strided_gathered(
                &self.ring,
                params,
                (per * p.count, limbs),
                p.count,
                &keys.galois,
                batch,
                &mut gather,
            )?;
            out.copy_from(&self.ring, &packed, 0, (g - first) * per, per)?;
        }
        Ok(out)
    }
}

impl<B: Backend> SchemeServer for BlockedServer<B> {
    fn name(&self) -> &'static str {
        self.design.name
    }

    fn summary(&self) -> ParamSummary {
        self.design.summary()
    }

    fn preprocess_bytes(&self) -> usize {
        match &self.plaintexts {
            Plaintexts::Preprocessed(p) => p.shape().words(self.design.params.n()) * 4,
            Plaintexts::Streamed { table, .. } => table.m() * table.d() * 4,
        }
    }

    fn predicted_bytes(&self, tokens: usize) -> Option<WireBytes> {
        Some(self.design.predicted_bytes(tokens))
    }

    fn open_session(&self, setup: &[u8]) -> Result<u64, ProtocolError> {
        let d = &self.design;
        let (pk, galois, _) = decode_setup(
            &d.params,
            d.id,
            setup,
            self.limits,
            (&d.galois_elements(), d.key_bits()),
            Sharing::NONE,
        )?;
        let digit_bits = d.packing.map_or(0, |p| p.digit_bits);
        let keys = SessionKeys {
            pk: load_public_key(&self.ring, &d.params, &pk)?,
            galois: galois
                .iter()
                .map(|k| load_galois_key(&self.ring, &d.params, k, digit_bits))
                .collect::<Result<_, _>>()?,
        };
        self.sessions.open(keys)
    }

    fn close_session(&self, session: u64) {
        self.sessions.close(session);
    }

    fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn answer(&self, session: u64, query: &[u8]) -> Result<(Vec<u8>, Shares), ProtocolError> {
        let d = &self.design;
        let mut trace = crate::trace::Phases::new(d.name).waiting_on(self.ring.backend());
        let keys = self.session(session)?;
        let (params, l) = (&d.params, &d.layout);
        let (ib, ob) = (l.in_blocks(), l.out_blocks());
        let group = l.group();
        let (tokens, cts) = decode_query(params, d.id, query, &|t| t.div_ceil(group) * ib, self.limits)?;
        trace.mark("decode");
        let groups = d.groups(tokens);
        let a = expand_queries(&self.ring, params, &cts, ib)?;
        trace.mark("expand");
        let limbs = params.limbs();
        // Products of packed schemes are whole ciphertexts per output block: go through the
        // groups a few at a time so that at most about PRODUCT_BUDGET bytes of them exist.
        const PRODUCT_BUDGET: usize = 1 << 30;
        let per_group = 2 * ob * params.n() * limbs * 4;
        let chunk = if d.packing.is_some() { (PRODUCT_BUDGET / per_group).clamp(1, groups) } else { groups };
        let packed = match d.packing {
            Some(p) if chunk < groups => {
                let per = d.responses_per_group();
                let mut all = Ciphertexts::zeros(&self.ring, groups * per, limbs)?;
                for g0 in (0..groups).step_by(chunk) {
                    let gc = chunk.min(groups - g0);
                    let mut ac: Polys<B, Ntt> = self.ring.zeros(Shape::new(2 * gc * ib, limbs))?;
                    self.ring.copy_polys(&a, 2 * g0 * ib, &mut ac, 0, 2 * gc * ib)?;
                    let Rows::Coeff(rows) = self.product_rows(&ac, gc)? else {
                        return Err(ProtocolError::State("packed products in the NTT domain".into()));
                    };
                    trace.mark("mac+split");
                    let packed = self.pack_groups(&keys, &rows, p, 0, gc)?;
                    all.copy_from(&self.ring, &packed, 0, g0 * per, gc * per)?;
                    drop((ac, rows, packed));
                    trace.mark("pack");
                }
                Outputs::Coeff(all)
            }
            _ => {
                let rows = self.product_rows(&a, groups)?;
                trace.mark("mac+split");
                let packed = self.pack_rows(&keys, &rows, 0, groups)?;
                drop(rows); // freeing the products is the packing's, not the finish's
                trace.mark("pack");
                packed
            }
        };
        let r = self.finish_request(&keys, tokens, packed).map(|(response, shares, steps)| {
            trace.steps(&steps);
            (response, shares)
        });
        trace.mark("finish+encode");
        r
    }

    fn answer_many(&self, queries: &[(u64, &[u8])]) -> Vec<crate::Answer> {
        self.answer_batch(queries)
    }
}

impl<B: Backend> BlockedServer<B> {
    /// Masks, switches and encodes one request's (packed) products: its response, the
    /// server's shares, and the host's milliseconds per step (`FASTQUERY_TRACE`).
    fn finish_request(
        &self,
        keys: &SessionKeys<B>,
        tokens: usize,
        packed: Outputs<B>,
    ) -> Result<(Vec<u8>, Shares, fastquery_he::server::HostSteps), ProtocolError> {
        let d = &self.design;
        let params = &d.params;
        let layout = d.positions(tokens);
        let positions: Vec<Vec<usize>> = layout.iter().map(|v| v.iter().map(|p| p.0).collect()).collect();
        let fin = finish_outputs(
            &self.ring,
            params,
            &keys.pk,
            &d.noise,
            packed,
            &positions,
            None,
            &mut rand::rng(),
        )?;
        let at = std::time::Instant::now();
        let shares = place_shares(tokens, self.d, params.plain_bits(), &layout, &fin.shares);
        let response = encode_response(
            params,
            d.id,
            (d.noise.drop_bits, d.noise.c1_bits),
            &fin.responses,
            Sharing::NONE,
        )?;
        let mut steps = fin.steps;
        steps.push(("encode", at.elapsed().as_secs_f64() * 1e3));
        Ok((response, shares, steps))
    }

    /// [`SchemeServer::answer_many`]: every valid query's one-hot ciphertexts become rows of one
    /// multiply-accumulate, so the table is read once for the batch (the product with a
    /// plaintext table does not depend on the key); then each request is packed with its own
    /// Galois keys, masked and switched under its own public key. Falls back to one by one when
    /// the products of the batch would exceed the packing budget.
    fn answer_batch(&self, queries: &[(u64, &[u8])]) -> Vec<crate::Answer> {
        let d = &self.design;
        let (params, l) = (&d.params, &d.layout);
        let (ib, ob) = (l.in_blocks(), l.out_blocks());
        let group = l.group();
        let mut results: Vec<Option<crate::Answer>> = queries.iter().map(|_| None).collect();
        // Decode every query; a bad one fails alone.
        let mut valid = Vec::new();
        for (i, (session, query)) in queries.iter().enumerate() {
            let decoded = self.session(*session).and_then(|keys| {
                let (tokens, cts) =
                    decode_query(params, d.id, query, &|t| t.div_ceil(group) * ib, self.limits)?;
                Ok((keys, tokens, cts))
            });
            match decoded {
                Ok(v) => valid.push((i, v)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let groups: usize = valid.iter().map(|(_, (_, t, _))| d.groups(*t)).sum();
        const PRODUCT_BUDGET: usize = 1 << 30;
        let too_big = 2 * groups * ob * params.n() * params.limbs() * 4 > PRODUCT_BUDGET;
        if valid.len() <= 1 || too_big {
            for (i, (session, query)) in queries.iter().enumerate() {
                if results[i].is_none() {
                    results[i] = Some(self.answer(*session, query));
                }
            }
            return results.into_iter().map(|r| r.expect("every query has a result")).collect();
        }
        let batch = (|| -> Result<Rows<B>, ProtocolError> {
            let cts: Vec<_> = valid.iter().flat_map(|(_, (_, _, cts))| cts.iter().cloned()).collect();
            let a = expand_queries(&self.ring, params, &cts, ib)?;
            self.product_rows(&a, groups)
        })();
        match batch {
            Err(e) => {
                for (i, _) in &valid {
                    results[*i] = Some(Err(ProtocolError::State(format!("the batch failed: {e}"))));
                }
            }
            Ok(rows) => {
                let mut g0 = 0;
                for (i, (keys, tokens, _)) in &valid {
                    let gk = d.groups(*tokens);
                    let r = self
                        .pack_rows(keys, &rows, g0, gk)
                        .and_then(|packed| self.finish_request(keys, *tokens, packed))
                        .map(|(response, shares, _)| (response, shares));
                    results[*i] = Some(r);
                    g0 += gk;
                }
            }
        }
        results.into_iter().map(|r| r.expect("every query has a result")).collect()
    }
}

/// The client of a blocked scheme.
pub struct BlockedClient {
    design: Design,
    he: Client,
    state: ClientState,
    limits: Limits,
    d: usize,
}

impl std::fmt::Debug for BlockedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockedClient")
            .field("scheme", &self.design.name)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl BlockedClient {
    /// A client with a fresh secret key, for a table of `d` channels.
    pub fn new(design: Design, d: usize) -> Result<Self, ProtocolError> {
        let he = Client::new(design.params.clone())?;
        Ok(Self { design, he, state: ClientState::Fresh, limits: Limits::default(), d })
    }
}

impl SchemeClient for BlockedClient {
    fn setup(&mut self) -> Result<Vec<u8>, ProtocolError> {
        if self.state != ClientState::Fresh {
            return Err(ProtocolError::State("setup was already sent".into()));
        }
        let d = &self.design;
        let galois = match d.packing {
            Some(p) => self.he.galois_keys(&d.galois_elements(), p.digit_bits)?,
            None => Vec::new(),
        };
        self.state = ClientState::Ready;
        Ok(encode_setup(&d.params, d.id, &self.he.public_key(), &galois, None))
    }

    fn query(&mut self, ids: &[usize]) -> Result<Vec<u8>, ProtocolError> {
        check_query(&self.state, ids.len(), self.limits.max_tokens)?;
        let l = &self.design.layout;
        let mut msgs = Vec::with_capacity(self.design.groups(ids.len()) * l.in_blocks());
        for group in ids.chunks(l.group()) {
            msgs.extend(l.query_messages(group)?);
        }
        let cts = self.he.encrypt_sparse(&msgs)?;
        self.state = ClientState::Waiting { ids: ids.to_vec() };
        Ok(encode_query(&self.design.params, self.design.id, ids.len(), &cts))
    }

    fn decode(&mut self, response: &[u8]) -> Result<Shares, ProtocolError> {
        let ClientState::Waiting { ids } = &self.state else {
            return Err(ProtocolError::State("no query is pending".into()));
        };
        let tokens = ids.len();
        let d = &self.design;
        let shares = decode_shares(
            &self.he,
            d.id,
            response,
            (&d.positions(tokens), Sharing::NONE),
            (tokens, self.d),
            self.limits,
        )?;
        self.state = ClientState::Ready;
        Ok(shares)
    }
}

#[cfg(test)]
mod tests {
    use super::WireBytes;
    use crate::fastquery::{Objective, candidates};

    /// A request's part of the setup over a session: nothing for a session without end, the
    /// setup spread over the session's tokens and rounded up, the whole setup where one request
    /// holds the session; random sizes.
    #[test]
    fn a_request_pays_its_part_of_the_setup() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for _ in 0..1000 {
            let b = WireBytes {
                setup: rng.random_range(0..1usize << 36),
                query: rng.random_range(0..1usize << 30),
                response: rng.random_range(0..1usize << 30),
            };
            let own = (b.query + b.response) as u64;
            let tokens = rng.random_range(1..300usize);
            let session = rng.random_range(1..100_000usize);
            assert_eq!(b.per_request(tokens, None), own);
            let part = b.per_request(tokens, Some(session)) - own;
            if session <= tokens {
                assert_eq!(part, b.setup as u64);
            } else {
                // part = ceil(setup * tokens / session): the requests of a session pay the setup
                // and at most one byte more each.
                let exact = b.setup as u128 * tokens as u128;
                assert!(part as u128 * session as u128 >= exact, "{b:?} {tokens} {session}");
                assert!(part == 0 || (part as u128 - 1) * (session as u128) < exact);
            }
            // Longer sessions never pay more.
            assert!(b.per_request(tokens, Some(session + 1)) <= b.per_request(tokens, Some(session)));
            // Over a session with decode steps: the setup, the full requests that hold the
            // other tokens, and a one-token request per step; without steps, per_request.
            let one = WireBytes {
                setup: b.setup,
                query: rng.random_range(0..1 << 20),
                response: rng.random_range(0..1 << 20),
            };
            assert_eq!(
                b.over_session(|| one, tokens, Some(session), 0),
                b.per_request(tokens, Some(session))
            );
            assert_eq!(b.over_session(|| one, tokens, None, 5), own);
            let decode = rng.random_range(1..=session);
            let full = (session - decode).div_ceil(tokens) as u64;
            let want = b.setup as u64 + full * own + decode as u64 * (one.query + one.response) as u64;
            assert_eq!(b.over_session(|| one, tokens, Some(session), decode), want);
        }
    }

    /// The byte counts of the design search come from counted `c0` coefficients; they are the
    /// lengths of the positions the server keeps and the client reads: every blocked candidate
    /// (each packing), Cheetah's and Iron's designs, at token counts that fill the last group
    /// or leave it partial.
    #[test]
    fn counted_coefficients_are_the_positions_kept() {
        for (m, d) in [(300usize, 40usize), (2000, 700), (5000, 64)] {
            for tokens in [1usize, 3, 8] {
                let mut designs: Vec<_> = candidates(m, d, 5, 37, tokens, Objective::Bytes)
                    .unwrap()
                    .into_iter()
                    .map(|(_, design)| design)
                    .collect();
                designs.push(crate::cheetah::design(m, d, 16, 37).unwrap());
                designs.push(crate::iron::design(m, d, 16, 37, tokens).unwrap());
                assert!(designs.len() > 2, "{m} x {d}");
                for design in &designs {
                    let listed: Vec<usize> = design.positions(tokens).iter().map(Vec::len).collect();
                    assert_eq!(
                        design.kept(tokens),
                        listed,
                        "{m} x {d}, {tokens} tokens: {}",
                        design.layout.describe()
                    );
                }
            }
        }
    }
}
