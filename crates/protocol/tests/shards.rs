//! One server over several devices (`shards::Shards`): sessions spread over the devices, a batch
//! mixing their sessions answered in order with every share verified, a device that fails
//! failing only its own queries, and devices of different designs refused. CPU backends stand
//! in for the devices (each its own backend and copy of the preprocessed table).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use fastquery_cpu::CpuBackend;
use fastquery_protocol::{
    Answer, Operations, ParamSummary, ProtocolError, SchemeClient, SchemeServer, Shares,
    blocked::WireBytes,
    harness::{DesignInputs, SchemeKind, rows_match},
    shards::Shards,
};
use fastquery_table::IntTable;
use rand::{Rng, SeedableRng, rngs::StdRng};

mod common;
use common::random_table;

fn inputs(kind: SchemeKind, table: &IntTable, tokens: usize) -> DesignInputs {
    DesignInputs::for_backend(&CpuBackend::new(), table, kind.default_plain_bits(), tokens).unwrap()
}

/// `devices` servers of `kind` over `table`, each on its own one-thread CPU backend.
fn servers(
    kind: SchemeKind,
    table: &IntTable,
    inputs: &DesignInputs,
    devices: usize,
) -> Vec<Arc<dyn SchemeServer>> {
    (0..devices)
        .map(|_| {
            let backend = Arc::new(CpuBackend::with_threads(1).unwrap());
            Arc::from(kind.build_for(backend, table, inputs).unwrap().0)
        })
        .collect()
}

/// Opens a session for a fresh client.
fn session(
    kind: SchemeKind,
    inputs: &DesignInputs,
    server: &dyn SchemeServer,
) -> (Box<dyn SchemeClient>, u64) {
    let mut client = kind.client(inputs).unwrap();
    let id = server.open_session(&client.setup().unwrap()).unwrap();
    (client, id)
}

/// Decodes `answer` with `client` and checks the shares against the table's rows `ids`.
fn verified(
    table: &IntTable,
    kind: SchemeKind,
    client: &mut dyn SchemeClient,
    ids: &[usize],
    answer: Answer,
) -> bool {
    let (response, server_shares) = answer.unwrap();
    let mine = client.decode(&response).unwrap();
    rows_match(table, ids, kind.default_plain_bits(), &mine.reconstruct(&server_shares).unwrap())
}

#[test]
fn sessions_spread_over_the_devices_and_a_mixed_batch_is_answered_in_order() {
    let table = random_table(300, 12, 6, 7);
    let mut rng = StdRng::seed_from_u64(11);
    for kind in [SchemeKind::Cheetah, SchemeKind::FastQuery] {
        let tokens = 2;
        let inputs = inputs(kind, &table, tokens);
        let shards = Shards::new(servers(kind, &table, &inputs, 3)).unwrap();
        assert_eq!(shards.devices(), 3);
        let mut clients: Vec<_> = (0..5).map(|_| session(kind, &inputs, &shards)).collect();
        assert_eq!(
            shards.open(),
            vec![2, 2, 1],
            "{}: the least loaded device, the lowest among equals",
            kind.name()
        );
        assert_eq!(shards.sessions(), 5);
        // One batch over every session, an unknown session in the middle.
        let ids: Vec<Vec<usize>> =
            (0..5).map(|_| (0..tokens).map(|_| rng.random_range(0..table.m())).collect()).collect();
        let queries: Vec<Vec<u8>> =
            clients.iter_mut().zip(&ids).map(|((c, _), ids)| c.query(ids).unwrap()).collect();
        let mut batch: Vec<(u64, &[u8])> =
            clients.iter().zip(&queries).map(|((_, s), q)| (*s, q.as_slice())).collect();
        batch.insert(2, (999, &queries[0]));
        let mut answers = shards.answer_many(&batch);
        assert_eq!(answers.len(), 6);
        let unknown = answers.remove(2);
        assert!(matches!(unknown, Err(ProtocolError::State(ref m)) if m.contains("unknown session 999")));
        for (((client, _), ids), answer) in clients.iter_mut().zip(&ids).zip(answers) {
            assert!(verified(&table, kind, client.as_mut(), ids, answer), "{}", kind.name());
        }
        // One query alone, on the device its session lives on.
        let (client, id) = &mut clients[4];
        let ids = [0, table.m() - 1];
        let query = client.query(&ids).unwrap();
        assert!(verified(&table, kind, client.as_mut(), &ids, shards.answer(*id, &query)));
        // A closed session frees its place (and its id is never answered again).
        let closed = clients[0].1;
        shards.close_session(closed);
        assert_eq!(shards.open(), vec![1, 2, 1]);
        assert!(shards.answer(closed, &query).is_err());
        shards.close_session(closed); // twice, or unknown: ignored
        let (_, again) = session(kind, &inputs, &shards);
        assert_eq!(shards.open(), vec![2, 2, 1]);
        assert_ne!(again, closed, "ids are never reused");
        // A session closed by several callers at once leaves its device once.
        let racing = clients[1].1;
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| shards.close_session(racing));
            }
        });
        assert_eq!(shards.open(), vec![2, 1, 1], "{}", kind.name());
        assert!(shards.preprocess_bytes() > 0);
        assert_eq!(shards.preprocess_bytes(), 3 * servers(kind, &table, &inputs, 1)[0].preprocess_bytes());
    }
}

/// A device's server that panics on demand (a GPU that fails mid-batch).
struct Flaky {
    inner: Arc<dyn SchemeServer>,
    fail: AtomicBool,
}

impl SchemeServer for Flaky {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn summary(&self) -> ParamSummary {
        self.inner.summary()
    }
    fn preprocess_bytes(&self) -> usize {
        self.inner.preprocess_bytes()
    }
    fn open_session(&self, setup: &[u8]) -> Result<u64, ProtocolError> {
        assert!(!self.fail.load(Ordering::SeqCst), "the device is lost");
        self.inner.open_session(setup)
    }
    fn close_session(&self, session: u64) {
        self.inner.close_session(session)
    }
    fn answer(&self, session: u64, query: &[u8]) -> Result<(Vec<u8>, Shares), ProtocolError> {
        self.answer_many(&[(session, query)]).pop().unwrap()
    }
    fn answer_many(&self, queries: &[(u64, &[u8])]) -> Vec<Answer> {
        assert!(!self.fail.load(Ordering::SeqCst), "the device is lost");
        self.inner.answer_many(queries)
    }
    fn predicted_bytes(&self, tokens: usize) -> Option<WireBytes> {
        self.inner.predicted_bytes(tokens)
    }
    fn predicted_operations(&self, tokens: usize) -> Option<Operations> {
        self.inner.predicted_operations(tokens)
    }
}

#[test]
fn a_failing_device_fails_only_its_own_queries() {
    let kind = SchemeKind::Cheetah;
    let table = random_table(150, 8, 6, 3);
    let inputs = inputs(kind, &table, 1);
    let mut devices = servers(kind, &table, &inputs, 2);
    let flaky = Arc::new(Flaky { inner: devices.pop().unwrap(), fail: AtomicBool::new(false) });
    devices.push(flaky.clone());
    let shards = Shards::new(devices).unwrap();
    let (mut a, sa) = session(kind, &inputs, &shards);
    let (mut b, sb) = session(kind, &inputs, &shards);
    assert_eq!(shards.open(), vec![1, 1]);
    let mut pending: Option<Vec<u8>> = None;
    let mut round = |lost: bool| {
        flaky.fail.store(lost, Ordering::SeqCst);
        let (ia, ib) = ([5], [149]);
        let qa = a.query(&ia).unwrap();
        // A client whose request failed sends it again.
        let qb = pending.take().unwrap_or_else(|| b.query(&ib).unwrap());
        let mut answers = shards.answer_many(&[(sa, &qa), (sb, &qb)]).into_iter();
        assert!(verified(&table, kind, a.as_mut(), &ia, answers.next().unwrap()), "device 0 serves on");
        let on_b = answers.next().unwrap();
        if lost {
            assert!(
                matches!(on_b, Err(ProtocolError::State(ref m)) if m.contains("device 1 failed")),
                "{on_b:?}"
            );
            pending = Some(qb);
        } else {
            assert!(verified(&table, kind, b.as_mut(), &ib, on_b));
        }
    };
    round(false);
    round(true);
    // Device 1 is back: its session was never lost, and the request sent again is answered.
    round(false);
    // A setup placed on a lost device fails, and does not count as a session there.
    let mut c = kind.client(&inputs).unwrap();
    let setup = c.setup().unwrap();
    shards.open_session(&setup).unwrap(); // device 0 (the lowest of equals): 1 -> 2 sessions
    flaky.fail.store(true, Ordering::SeqCst);
    let lost = shards.open_session(&setup); // device 1 (one session): the least loaded
    assert!(matches!(lost, Err(ProtocolError::State(ref m)) if m.contains("device 1 failed")), "{lost:?}");
    assert_eq!(shards.open(), vec![2, 1]);
}

#[test]
fn devices_must_run_one_design() {
    assert!(Shards::new(vec![]).is_err());
    let kind = SchemeKind::Cheetah;
    let (small, large) = (random_table(100, 8, 6, 1), random_table(400, 8, 6, 1));
    let mut devices = servers(kind, &small, &inputs(kind, &small, 1), 1);
    devices.extend(servers(kind, &large, &inputs(kind, &large, 1), 1));
    let err = Shards::new(devices).unwrap_err().to_string();
    assert!(err.contains("device 1 runs another design"), "{err}");
    // Another scheme over the same table.
    let mut devices = servers(kind, &small, &inputs(kind, &small, 1), 1);
    let fq = SchemeKind::FastQuery;
    devices.extend(servers(fq, &small, &inputs(fq, &small, 1), 1));
    assert!(Shards::new(devices).is_err());
}
