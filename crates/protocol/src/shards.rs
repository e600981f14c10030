//! One scheme server over several devices (the GPUs of a node): a copy of the preprocessed
//! table on each, every session placed on one of them.
//!
//! A session's keys live where its setup was opened, so its queries are answered there. A
//! session goes to the device with the fewest open sessions (the lowest index among equals);
//! a batch of queries from sessions on several devices is split by device and the parts run at
//! once, each reading its own copy of the table. A part that fails, panics included, fails its
//! own queries only: the other devices' answers and sessions are untouched.
//!
//! Errors name a device by its place in the list [`Shards::new`] was given (`device 0` first).
//!
//! Every device must run the same design over the same table (the client derives the design
//! from the one `Info` the server sends), so [`Shards::new`] refuses servers whose names,
//! parameters or predicted bytes differ.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::atomic::{AtomicUsize, Ordering},
    sync::{Arc, Mutex},
};

use crate::{
    Answer, Operations, ParamSummary, ProtocolError, SchemeServer, blocked::WireBytes, scheme::Sessions,
};

/// One device's server and the sessions placed on it.
struct Shard {
    server: Arc<dyn SchemeServer>,
    /// Sessions open on it (placed and not yet closed).
    open: AtomicUsize,
}

/// A batch's queries for one device: their places in the batch, and each with the session id
/// the device gave it.
#[derive(Clone, Default)]
struct Part<'q> {
    at: Vec<usize>,
    queries: Vec<(u64, &'q [u8])>,
}

/// Several servers of one scheme and table, one per device, behind one [`SchemeServer`].
pub struct Shards {
    shards: Vec<Shard>,
    /// A session's device and its id there, by the id this server gave it.
    sessions: Sessions<(usize, u64)>,
    /// Serialises placement, so that sessions opened at once spread instead of all taking the
    /// same least-loaded device.
    place: Mutex<()>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards").field("devices", &self.shards.len()).field("open", &self.open()).finish()
    }
}

/// The same error for each of `count` queries.
fn failed(count: usize, why: &str) -> Vec<Answer> {
    (0..count).map(|_| Err(ProtocolError::State(why.to_string()))).collect()
}

impl Shards {
    /// One server per device, all of one scheme over one table (checked: same name, parameters,
    /// and predicted bytes and operations at one and at 64 tokens).
    pub fn new(servers: Vec<Arc<dyn SchemeServer>>) -> Result<Self, ProtocolError> {
        let first = servers.first().ok_or_else(|| ProtocolError::State("no device to serve from".into()))?;
        let probe = |s: &dyn SchemeServer| {
            (
                s.name(),
                s.summary(),
                [1, 64].map(|t| s.predicted_bytes(t)),
                [1, 64].map(|t| s.predicted_operations(t)),
            )
        };
        let want = probe(first.as_ref());
        for (k, s) in servers.iter().enumerate().skip(1) {
            if probe(s.as_ref()) != want {
                return Err(ProtocolError::State(format!(
                    "device {k} runs another design than device 0 (every device must serve the same \
                     scheme over the same table and design inputs)"
                )));
            }
        }
        let shards = servers.into_iter().map(|server| Shard { server, open: AtomicUsize::new(0) }).collect();
        Ok(Self { shards, sessions: Sessions::new(), place: Mutex::new(()) })
    }

    /// Devices served from.
    pub fn devices(&self) -> usize {
        self.shards.len()
    }

    /// Open sessions on each device.
    pub fn open(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.open.load(Ordering::Relaxed)).collect()
    }

    fn first(&self) -> &dyn SchemeServer {
        self.shards[0].server.as_ref()
    }

    /// The device with the fewest open sessions, one more session counted on it.
    fn reserve(&self) -> usize {
        let _guard = self.place.lock().unwrap_or_else(|p| p.into_inner());
        let k = (0..self.shards.len()).min_by_key(|&k| (self.shards[k].open.load(Ordering::Relaxed), k));
        let k = k.unwrap_or(0);
        self.shards[k].open.fetch_add(1, Ordering::Relaxed);
        k
    }

    fn release(&self, k: usize) {
        // Never below zero, whatever the interleaving.
        let _ = self.shards[k].open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Answers the queries `group` (ids on device `k`) there; a panic, or an answer count that
    /// does not match, becomes an error for each of them.
    fn answer_on(&self, k: usize, group: &[(u64, &[u8])]) -> Vec<Answer> {
        match catch_unwind(AssertUnwindSafe(|| self.shards[k].server.answer_many(group))) {
            Ok(answers) if answers.len() == group.len() => answers,
            Ok(answers) => failed(
                group.len(),
                &format!("device {k} answered {} of a batch of {} queries", answers.len(), group.len()),
            ),
            Err(p) => failed(
                group.len(),
                &format!("device {k} failed on this batch: {}", crate::panic_message(p.as_ref())),
            ),
        }
    }
}

impl SchemeServer for Shards {
    fn name(&self) -> &'static str {
        self.first().name()
    }

    fn summary(&self) -> ParamSummary {
        self.first().summary()
    }

    /// Bytes of preprocessed table on all devices together.
    fn preprocess_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.server.preprocess_bytes()).sum()
    }

    fn open_session(&self, setup: &[u8]) -> Result<u64, ProtocolError> {
        let k = self.reserve();
        let opened = catch_unwind(AssertUnwindSafe(|| self.shards[k].server.open_session(setup)))
            .unwrap_or_else(|p| {
                Err(ProtocolError::State(format!(
                    "device {k} failed on a setup: {}",
                    crate::panic_message(p.as_ref())
                )))
            });
        let inner = match opened {
            Ok(inner) => inner,
            Err(e) => {
                self.release(k);
                return Err(e);
            }
        };
        self.sessions.open((k, inner)).inspect_err(|_| {
            self.shards[k].server.close_session(inner);
            self.release(k);
        })
    }

    fn close_session(&self, session: u64) {
        // Only the call that removes the session releases its place (two closes at once count
        // it once).
        if let Some(placed) = self.sessions.close(session) {
            let (k, inner) = *placed;
            self.shards[k].server.close_session(inner);
            self.release(k);
        }
    }

    fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn answer(&self, session: u64, query: &[u8]) -> Result<(Vec<u8>, crate::Shares), ProtocolError> {
        let (k, inner) = *self.sessions.get(session)?;
        self.answer_on(k, &[(inner, query)])
            .pop()
            .unwrap_or_else(|| Err(ProtocolError::State(format!("device {k} returned no answer"))))
    }

    /// Splits the batch by device and answers the parts at once (one thread per device with
    /// work), each in one pass over its copy of the table; the answers come back in order.
    fn answer_many(&self, queries: &[(u64, &[u8])]) -> Vec<Answer> {
        let mut answers: Vec<Option<Answer>> = (0..queries.len()).map(|_| None).collect();
        // Per device: the batch positions and the queries with that device's session ids.
        let mut parts = vec![Part::default(); self.shards.len()];
        for (i, &(session, query)) in queries.iter().enumerate() {
            match self.sessions.get(session) {
                Ok(placed) => {
                    let (k, inner) = *placed;
                    parts[k].at.push(i);
                    parts[k].queries.push((inner, query));
                }
                Err(e) => answers[i] = Some(Err(e)),
            }
        }
        let busy: Vec<usize> = (0..parts.len()).filter(|&k| !parts[k].queries.is_empty()).collect();
        let results: Vec<Vec<Answer>> = if busy.len() <= 1 {
            busy.iter().map(|&k| self.answer_on(k, &parts[k].queries)).collect()
        } else {
            std::thread::scope(|scope| {
                let parts = &parts;
                let running: Vec<_> =
                    busy.iter().map(|&k| scope.spawn(move || self.answer_on(k, &parts[k].queries))).collect();
                // `answer_on` catches panics, so a join fails only if the thread could not run.
                running
                    .into_iter()
                    .zip(&busy)
                    .map(|(h, &k)| {
                        h.join().unwrap_or_else(|_| {
                            failed(parts[k].queries.len(), &format!("device {k}'s thread failed"))
                        })
                    })
                    .collect()
            })
        };
        for (&k, part) in busy.iter().zip(results) {
            for (&i, answer) in parts[k].at.iter().zip(part) {
                answers[i] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(ProtocolError::State("a query went unanswered".into()))))
            .collect()
    }

    fn predicted_bytes(&self, tokens: usize) -> Option<WireBytes> {
        self.first().predicted_bytes(tokens)
    }

    fn predicted_operations(&self, tokens: usize) -> Option<Operations> {
        self.first().predicted_operations(tokens)
    }
}
