//! The networked server and client on loopback: load, hostile input, client-side errors,
//! shutdown, and the decoders on random bytes. Every test is bounded in time (timeouts inside).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::Duration,
};

use fastquery_cpu::CpuBackend;
use fastquery_net::{
    Client, ClientConfig, NetError, Server, ServerConfig, ShareSink,
    frame::{Code, Frame, Hello, Info, Kind, read_frame, write_frame},
};
use fastquery_protocol::{
    SchemeServer, Shares,
    cost::Device,
    harness::{DesignInputs, SchemeKind},
    shards::Shards,
};
use fastquery_table::{IntTable, Workload};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::oneshot, task::JoinHandle};

const TOKEN: &[u8] = b"test-token-0123456789abcdef";

type Store = Arc<Mutex<HashMap<u64, Shares>>>;

struct Running {
    addr: SocketAddr,
    server: Arc<Server>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), NetError>>,
    store: Store,
    table: Arc<IntTable>,
    plain: u32,
    /// The devices, where there are several.
    shards: Option<Arc<Shards>>,
}

fn table() -> IntTable {
    IntTable::fixed_point(&Workload::Tiny.synthetic(3), 12, 16).unwrap()
}

async fn start(kind: SchemeKind, tokens: usize, tune: impl FnOnce(&mut ServerConfig)) -> Running {
    start_with(kind, table(), tokens, |_| {}, tune).await
}

/// [`start`] on `table`, with the design inputs the server tells its clients adjusted by
/// `inputs`.
async fn start_with(
    kind: SchemeKind,
    table: IntTable,
    tokens: usize,
    inputs: impl FnOnce(&mut DesignInputs),
    tune: impl FnOnce(&mut ServerConfig),
) -> Running {
    start_on(kind, table, tokens, 1, inputs, tune).await
}

/// [`start_with`] with `devices` servers over the table standing in for the devices of one
/// server ([`Shards`] where more than one; they share one CPU backend).
async fn start_on(
    kind: SchemeKind,
    table: IntTable,
    tokens: usize,
    devices: usize,
    inputs: impl FnOnce(&mut DesignInputs),
    tune: impl FnOnce(&mut ServerConfig),
) -> Running {
    let table = Arc::new(table);
    let plain = kind.default_plain_bits();
    let backend = Arc::new(CpuBackend::new());
    let mut design = DesignInputs::for_backend(backend.as_ref(), &table, plain, tokens).unwrap();
    inputs(&mut design);
    let mut servers: Vec<Arc<dyn SchemeServer>> = (0..devices)
        .map(|_| Arc::from(kind.build_for(backend.clone(), &table, &design).unwrap().0))
        .collect();
    let shards = (devices > 1).then(|| Arc::new(Shards::new(std::mem::take(&mut servers)).unwrap()));
    let server: Arc<dyn SchemeServer> = match &shards {
        Some(shards) => shards.clone(),
        None => servers.pop().unwrap(),
    };
    let mut cfg = ServerConfig::new(TOKEN.to_vec());
    tune(&mut cfg);
    let store: Store = Arc::default();
    let s = store.clone();
    let sink: ShareSink = Arc::new(move |id, shares: &Shares| {
        s.lock().unwrap().insert(id, shares.clone());
        Ok(())
    });
    let server = Server::new(server, kind, design, cfg, Some(sink)).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(server.clone().serve(listener, async move {
        let _ = rx.await;
    }));
    Running { addr, server, stop: Some(tx), task, store, table, plain, shards }
}

impl Running {
    /// `requests` requests of one or two random rows of the table by `client`, each checked.
    async fn query_random(&self, client: &mut Client, rng: &mut StdRng, requests: usize) {
        for _ in 0..requests {
            let ids: Vec<usize> = (0..rng.random_range(1..=2)).map(|_| rng.random_range(0..512)).collect();
            let r = client.query(&ids).await.unwrap();
            self.check(&ids, &r);
        }
    }

    /// `clients` clients at once (client `c`'s requests drawn from seed `c`), each making
    /// `requests` random requests ([`Running::query_random`]); within 300 s, and the clients
    /// come back connected (their sessions open).
    async fn random_clients(self: &Arc<Self>, clients: u64, requests: usize) -> Vec<Client> {
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let run = self.clone();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(c);
                    let mut client = Client::connect(&run.addr.to_string(), run.config()).await.unwrap();
                    run.query_random(&mut client, &mut rng, requests).await;
                    client
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(300), async {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
        .await
        .expect("the load finishes in time")
    }

    /// Waits (at most 30 s) until no device holds a session, where there are several.
    async fn sessions_leave_their_devices(&self) {
        let Some(shards) = &self.shards else { return };
        tokio::time::timeout(Duration::from_secs(30), async {
            while shards.open().iter().any(|&n| n > 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("every session closed on its device");
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(TOKEN.to_vec());
        c.timeout = Duration::from_secs(60);
        c
    }

    /// Checks that the client's shares plus the server's (by request id) are the table's rows.
    fn check(&self, ids: &[usize], r: &fastquery_net::QueryResult) {
        let store = self.store.lock().unwrap();
        let server: Vec<u64> = r
            .requests
            .iter()
            .flat_map(|id| store.get(id).expect("the server's shares of this request").values.iter().copied())
            .collect();
        let server = Shares { tokens: ids.len(), d: self.table.d(), plain_bits: self.plain, values: server };
        let got = r.shares.reconstruct(&server).unwrap();
        assert!(
            fastquery_protocol::harness::rows_match(&self.table, ids, self.plain, &got),
            "tokens {ids:?} do not reconstruct"
        );
    }

    /// One client's queries of `batches`, each checked, then the server stopped.
    async fn query_all_and_stop(self, batches: &[&[usize]]) {
        let mut client = Client::connect(&self.addr.to_string(), self.config()).await.unwrap();
        for &ids in batches {
            let r = client.query(ids).await.unwrap();
            self.check(ids, &r);
        }
        drop(client);
        self.stop().await;
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("shutdown in time")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_twenty_requests_each() {
    let run = Arc::new(start(SchemeKind::Cheetah, 1, |_| {}).await);
    for client in run.random_clients(32, 20).await {
        client.close().await.unwrap();
    }
    let requests = run.server.stats().requests.load(std::sync::atomic::Ordering::Relaxed);
    // Cheetah answers one token per request: between 640 and 1,280 requests.
    assert!((640..=1280).contains(&requests), "{requests}");
    // Concurrent queries share table passes: fewer batches than requests.
    let stats = run.server.stats();
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stats.batched_queries.load(std::sync::atomic::Ordering::Relaxed), requests);
    assert!(batches < requests, "{batches} batches for {requests} requests");
    eprintln!("{requests} requests in {batches} batches");
    Arc::try_unwrap(run).ok().expect("no other owner").stop().await;
}

/// A server over three devices (CPU backends standing in for them): twelve clients at once,
/// each session on one device, batches of several sessions split among the devices; every
/// share checked, and the sessions spread four to a device.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_over_several_devices_serves_every_client() {
    let run = Arc::new(start_on(SchemeKind::FastQuery, table(), 2, 3, |_| {}, |_| {}).await);
    let clients = run.random_clients(12, 3).await;
    let stats = run.server.stats();
    let (requests, batches) = (stats.requests.load(Relaxed), stats.batches.load(Relaxed));
    assert_eq!(requests, 36);
    eprintln!("{requests} requests in {batches} batches over three devices");
    let shards = run.shards.clone().unwrap();
    assert_eq!(shards.open(), vec![4, 4, 4]);
    for client in clients {
        client.close().await.unwrap();
    }
    // A closed connection's session leaves its device.
    run.sessions_leave_their_devices().await;
    Arc::try_unwrap(run).ok().expect("no other owner").stop().await;
}

/// Opens a raw connection, sends `bytes`, and returns the server's first frame (if any).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Option<Frame> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s, 1 << 20))
        .await
        .expect("an answer")
        .ok()
        .flatten()
}

/// A client on another machine than the server's derives the server's design: the server's
/// threads travel in `Info` as a design input. Here the server claims 64 threads, for which
/// `fastquery-wan` packs its responses (with Galois keys) on the tiny table, where a client
/// ranking by its own machine's threads derived an unpacked design and sent keys the server
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_derives_the_design_of_the_servers_machine() {
    let kind = SchemeKind::FastQueryWan;
    let table = kind.table(&Workload::Tiny.synthetic(5)).unwrap();
    let claimed = 64;
    let run = start_with(kind, table, 1, |i| i.server_threads = claimed, |c| c.max_frame = 64 << 20).await;
    let info = run.server.info();
    assert_eq!(info.inputs().server_threads, claimed);
    let here = DesignInputs { server_threads: 2, ..info.inputs() };
    let bytes = |i: &DesignInputs| kind.design(i).unwrap().predicted_bytes(1);
    assert_ne!(bytes(&info.inputs()), bytes(&here), "the test needs designs that differ");
    run.query_all_and_stop(&[&[0], &[511], &[77]]).await;
}

/// A GPU server says so in `Info` (a design input: its designs rank by the GPU profile's
/// estimates, `fastquery_protocol::cost`), and a client on a CPU derives the GPU's design.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_derives_the_design_of_a_gpu_server() {
    // On the tiny table the WAN objective folds for a GPU and blocks for a CPU.
    let kind = SchemeKind::FastQueryWan;
    let table = kind.table(&Workload::Tiny.synthetic(6)).unwrap();
    let run = start_with(kind, table, 4, |i| i.device = Device::Gpu, |c| c.max_frame = 64 << 20).await;
    let info = run.server.info();
    assert_eq!((info.device, info.inputs().device), (Device::Gpu.code(), Device::Gpu));
    let cpu = DesignInputs { device: Device::Cpu, ..info.inputs() };
    let bytes = |i: &DesignInputs| kind.design(i).unwrap().predicted_bytes(4);
    assert_ne!(bytes(&info.inputs()), bytes(&cpu), "the test needs designs that differ");
    run.query_all_and_stop(&[&[0, 1, 2, 3], &[511], &[77, 300]]).await;
}

/// A server that declares its sessions' length tells its clients in `Info` (a design input):
/// the client derives the design made for that session, not the one of sessions without end,
/// and every share reconstructs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_derives_the_design_of_the_servers_sessions() {
    let kind = SchemeKind::FastQuery;
    let table = kind.table(&Workload::Tiny.synthetic(9)).unwrap();
    let run = start_with(kind, table, 4, |i| i.session_tokens = Some(4), |c| c.max_frame = 64 << 20).await;
    let info = run.server.info();
    assert_eq!((info.session_tokens, info.inputs().session_tokens), (4, Some(4)));
    let endless = DesignInputs { session_tokens: None, ..info.inputs() };
    let bytes = |i: &DesignInputs| kind.design(i).unwrap().predicted_bytes(4);
    assert_ne!(bytes(&info.inputs()), bytes(&endless), "the test needs designs that differ");
    assert!(bytes(&info.inputs()).setup < bytes(&endless).setup);
    run.query_all_and_stop(&[&[0, 1, 2, 3], &[511], &[77, 300]]).await;
}

/// A server that accepts fewer tokens per request than its design is made for tells both: the
/// client derives the design of the design's tokens (it derived one for the limit, which the
/// server's keys and queries did not fit) and splits its requests at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_limit_below_the_design_keeps_the_design() {
    // Designs for five tokens and for one differ (those for five and two stopped differing with
    // the expansion's slot layout of 2026-12-03, which moved the search's time estimates; those
    // for four and two when one-token responses sent c in the half ring).
    let run = start(SchemeKind::FastQuery, 5, |c| {
        c.max_tokens = 1;
        c.max_frame = 64 << 20;
    })
    .await;
    let info = run.server.info();
    assert_eq!((info.tokens, info.max_tokens), (5, 1));
    let limit = DesignInputs { tokens: 1, ..info.inputs() };
    let bytes = |i: &DesignInputs| SchemeKind::FastQuery.design(i).unwrap().predicted_bytes(1);
    assert_ne!(bytes(&info.inputs()), bytes(&limit), "the test needs designs that differ");
    let mut client = Client::connect(&run.addr.to_string(), run.config()).await.unwrap();
    let ids = [5, 300, 511];
    let r = client.query(&ids).await.unwrap();
    assert_eq!(r.requests.len(), 3);
    run.check(&ids, &r);
    drop(client);
    run.stop().await;
}

fn hello(scheme: u8, token: &[u8]) -> Vec<u8> {
    Frame::new(Kind::Hello, Hello { scheme, token: token.to_vec() }.encode()).to_bytes()
}

fn code(f: Option<Frame>) -> Option<Code> {
    f.filter(|f| f.kind == Kind::Error).map(|f| f.parse_error().unwrap().0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_is_refused_and_everyone_else_is_served() {
    hostile_input(1).await;
}

/// The same on a server over two devices ([`Shards`]): the hostile sessions land on both, and
/// the good client's session on one of them is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_input_on_several_devices_is_refused_and_everyone_else_is_served() {
    hostile_input(2).await;
}

/// Hostile connections beside a well-behaved client, on a server over `devices` devices.
async fn hostile_input(devices: usize) {
    let run = Arc::new(
        start_on(
            SchemeKind::FastQuery,
            table(),
            4,
            devices,
            |_| {},
            |c| {
                // Short enough for the stalled client below, long enough for a client's key
                // generation after `Info` and a whole frame of keys (19-32 MB) while the other
                // tests of this binary load the machine (at 400 ms a debug build's server timed
                // out mid-frame and hung up: broken pipe; at 2 s one release run in about ten
                // failed a real client's connect once the test of another machine's design ran
                // beside it).
                c.idle_timeout = Duration::from_secs(4);
                c.max_frame = 64 << 20; // fastquery's keys for the tiny table are about 32 MB
            },
        )
        .await,
    );
    // A well-behaved client queries throughout.
    let good = {
        let run = run.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(7);
            let mut client = Client::connect(&run.addr.to_string(), run.config()).await.unwrap();
            for _ in 0..8 {
                let ids: Vec<usize> =
                    (0..rng.random_range(1..=6)).map(|_| rng.random_range(0..512)).collect();
                let r = client.query(&ids).await.unwrap();
                run.check(&ids, &r);
            }
        })
    };
    let addr = run.addr;
    let mut rng = StdRng::seed_from_u64(99);
    // Random bytes.
    for _ in 0..5 {
        let junk: Vec<u8> = (0..rng.random_range(1..200)).map(|_| rng.random()).collect();
        let f = raw(addr, &junk).await;
        assert!(f.is_none() || f.as_ref().unwrap().kind == Kind::Error, "{f:?}");
    }
    // A length far above the limit: refused before anything is allocated.
    assert_eq!(code(raw(addr, &[0xff, 0xff, 0xff, 0xff, 1]).await), Some(Code::Limit));
    // A truncated frame, then the connection closed.
    let h = hello(0, TOKEN);
    assert_eq!(code(raw(addr, &h[..h.len() - 3]).await), Some(Code::BadFrame));
    // A client that stops halfway and stays connected: closed after the idle timeout.
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&h[..6]).await.unwrap();
        let f = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s, 1 << 20)).await.unwrap();
        assert_eq!(code(f.ok().flatten()), Some(Code::BadFrame));
    }
    // Wrong token, wrong scheme id, unknown frame kind, a query before the keys.
    assert_eq!(code(raw(addr, &hello(0, b"wrong-token-0123456789abcdef")).await), Some(Code::Unauthorised));
    assert_eq!(code(raw(addr, &hello(SchemeKind::Cheetah.id(), TOKEN)).await), Some(Code::WrongScheme));
    assert_eq!(code(raw(addr, &hello(200, TOKEN)).await), Some(Code::WrongScheme));
    assert_eq!(code(raw(addr, &[1, 0, 0, 0, 99]).await), Some(Code::BadFrame));
    // A client of the previous protocol is told which one this server speaks.
    // (the magic's last byte is the protocol's digit).
    let now = fastquery_net::frame::MAGIC[3] - b'0';
    let mut old = format!("FQN{}\0", now - 1).into_bytes();
    old.extend_from_slice(&(TOKEN.len() as u16).to_le_bytes());
    old.extend_from_slice(TOKEN);
    let refused = raw(addr, &Frame::new(Kind::Hello, old).to_bytes()).await.unwrap().parse_error().unwrap();
    assert_eq!(refused.0, Code::BadFrame);
    assert!(refused.1.contains(&format!("protocol {}; this server speaks {now}", now - 1)), "{}", refused.1);
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello(0, TOKEN)).await.unwrap();
        let info = read_frame(&mut s, 1 << 20).await.unwrap().unwrap();
        assert_eq!(info.kind, Kind::Info);
        let info = Info::decode(&info.payload).unwrap();
        assert_eq!(info.scheme, SchemeKind::FastQuery.id());
        write_frame(&mut s, &Frame::new(Kind::Query, vec![1, 0, 0, 0])).await.unwrap();
        assert_eq!(code(read_frame(&mut s, 1 << 20).await.unwrap()), Some(Code::BadFrame));
    }
    // Keys that do not parse (wrong parameter ids, random bytes): a protocol error.
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello(0, TOKEN)).await.unwrap();
        read_frame(&mut s, 1 << 20).await.unwrap().unwrap();
        let junk: Vec<u8> = (0..5000).map(|_| rng.random()).collect();
        write_frame(&mut s, &Frame::new(Kind::Setup, junk)).await.unwrap();
        assert_eq!(code(read_frame(&mut s, 1 << 20).await.unwrap()), Some(Code::Protocol));
    }
    // Well-formed keys of another scheme (other parameter ids): a protocol error.
    {
        let info = run.server.info();
        let mut other = SchemeKind::Bumblebee.client(&info.inputs()).unwrap();
        // The keys are made before connecting: the server's idle limit applies from the
        // connection on, and key generation in a debug build under a loaded run is slow.
        let keys = other.setup().unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello(0, TOKEN)).await.unwrap();
        read_frame(&mut s, 1 << 20).await.unwrap().unwrap();
        write_frame(&mut s, &Frame::new(Kind::Setup, keys)).await.unwrap();
        assert_eq!(code(read_frame(&mut s, 1 << 20).await.unwrap()), Some(Code::Protocol));
    }
    // A real session sending bad queries: refused one by one, the session still works.
    {
        let mut client = Client::connect(&addr.to_string(), run.config()).await.unwrap();
        assert!(matches!(client.query(&[512]).await, Err(NetError::Invalid(_))));
        let r = client.query(&[3, 4]).await.unwrap();
        run.check(&[3, 4], &r);
    }
    {
        // Raw: a query frame whose count exceeds the batch, then one whose body is garbage.
        let info = run.server.info();
        let mut keys = SchemeKind::FastQuery.client(&info.inputs()).unwrap();
        let setup = keys.setup().unwrap(); // before connecting, as above
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello(0, TOKEN)).await.unwrap();
        read_frame(&mut s, 1 << 20).await.unwrap().unwrap();
        write_frame(&mut s, &Frame::new(Kind::Setup, setup)).await.unwrap();
        assert_eq!(read_frame(&mut s, 1 << 20).await.unwrap().unwrap().kind, Kind::Ready);
        let over = fastquery_net::frame::encode_query(info.max_tokens + 1, &[0; 16]);
        write_frame(&mut s, &Frame::new(Kind::Query, over)).await.unwrap();
        assert_eq!(code(read_frame(&mut s, 1 << 20).await.unwrap()), Some(Code::Limit));
        let junk = fastquery_net::frame::encode_query(1, &[7; 1000]);
        write_frame(&mut s, &Frame::new(Kind::Query, junk)).await.unwrap();
        assert_eq!(code(read_frame(&mut s, 1 << 20).await.unwrap()), Some(Code::Protocol));
        // And a valid query on the same connection is answered.
        let q = keys.query(&[9]).unwrap();
        write_frame(&mut s, &Frame::new(Kind::Query, fastquery_net::frame::encode_query(1, &q)))
            .await
            .unwrap();
        assert_eq!(read_frame(&mut s, 1 << 20).await.unwrap().unwrap().kind, Kind::Response);
    }
    tokio::time::timeout(Duration::from_secs(120), good).await.expect("the good client finishes").unwrap();
    // Every session the hostile connections opened is gone, from every device.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(run.server.open_sessions(), 0);
    run.sessions_leave_their_devices().await;
    Arc::try_unwrap(run).ok().expect("no other owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_say_what_went_wrong() {
    // A server that is down.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e =
        Client::connect(&format!("127.0.0.1:{port}"), ClientConfig::new(TOKEN.to_vec())).await.unwrap_err();
    assert!(matches!(e, NetError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains("refused"), "{e}");
    let run = start(SchemeKind::Cheetah, 1, |_| {}).await;
    // A wrong token.
    let mut cfg = run.config();
    cfg.token = b"not-the-token-0123456789".to_vec();
    let e = Client::connect(&run.addr.to_string(), cfg).await.unwrap_err();
    assert!(matches!(e, NetError::Refused { code: Code::Unauthorised, .. }), "{e}");
    assert!(e.to_string().contains("token"), "{e}");
    // A wrong scheme.
    let mut cfg = run.config();
    cfg.scheme = Some(SchemeKind::FastQuery);
    let e = Client::connect(&run.addr.to_string(), cfg).await.unwrap_err();
    assert!(matches!(e, NetError::Refused { code: Code::WrongScheme, .. }), "{e}");
    assert!(e.to_string().contains("cheetah"), "{e}");
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed() {
    let run = start(SchemeKind::Cheetah, 1, |c| c.max_connections = 2).await;
    // Two idle connections hold the slots (not authorised, nothing sent).
    let _a = TcpStream::connect(run.addr).await.unwrap();
    let _b = TcpStream::connect(run.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = Client::connect(&run.addr.to_string(), run.config()).await.unwrap_err();
    assert!(matches!(e, NetError::Malformed(_) | NetError::Io(_)), "{e}");
    drop((_a, _b));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The slots are free again once those connections end.
    let mut c = Client::connect(&run.addr.to_string(), run.config()).await.unwrap();
    let r = c.query(&[8]).await.unwrap();
    run.check(&[8], &r);
    drop(c);
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_graceful() {
    let run = start(SchemeKind::Cheetah, 1, |_| {}).await;
    let mut client = Client::connect(&run.addr.to_string(), run.config()).await.unwrap();
    let r = client.query(&[5]).await.unwrap();
    run.check(&[5], &r);
    let addr = run.addr;
    run.stop().await;
    // The open connection is told, and nothing listens any more.
    assert!(client.query(&[6]).await.is_err());
    assert!(TcpStream::connect(addr).await.is_err());
}

#[test]
fn shares_file_is_numpy() {
    let shares =
        Shares { tokens: 3, d: 5, plain_bits: 37, values: (0..15).map(|v| v * 1_000_000_007).collect() };
    let b = fastquery_net::npy_bytes(&shares);
    assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '<u8'") && header.contains("'shape': (3, 5)"), "{header}");
    let body = &b[10 + hlen..];
    assert_eq!(body.len(), 15 * 8);
    assert_eq!(u64::from_le_bytes(body[8..16].try_into().unwrap()), 1_000_000_007);
}

mod decoders {
    use fastquery_net::frame::{Frame, Hello, Info, decode_query, decode_response};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]
        /// Bounded fuzzing in every test run: random bytes never panic a decoder, and what
        /// decodes re-encodes to the same bytes.
        #[test]
        fn never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(f) = Frame::from_bytes(&bytes, 1 << 16) {
                prop_assert_eq!(f.to_bytes(), bytes.clone());
            }
            if let Ok(h) = Hello::decode(&bytes) {
                prop_assert_eq!(h.encode(), bytes.clone());
            }
            if let Ok(i) = Info::decode(&bytes) {
                prop_assert_eq!(i.encode(), bytes.clone());
            }
            let _ = decode_query(&bytes);
            let _ = decode_response(&bytes);
            let _ = Frame::new(fastquery_net::frame::Kind::Error, bytes.clone()).parse_error();
        }

        #[test]
        fn hello_round_trips(scheme in any::<u8>(), token in proptest::collection::vec(any::<u8>(), 0..100)) {
            let h = Hello { scheme, token };
            prop_assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        }

        /// `Info` round-trips where it is plausible, and is refused, without a panic, where it
        /// is not: no rows or channels, a share ring outside 1..=64 bits, a request limit
        /// outside 1..=tokens, no server threads or more than the bound, an unknown device, an
        /// unknown key switching, no responses per shared `c` or more than sixteen.
        #[test]
        fn info_round_trips_or_is_refused(
            fields in proptest::collection::vec(0u32..70, 10),
            threads in prop_oneof![0u32..4, Just(fastquery_net::frame::MAX_SERVER_THREADS), Just(u32::MAX)],
            session in prop_oneof![Just(0u32), 1u32..5000, Just(u32::MAX)],
            decode in prop_oneof![Just(0u32), 0u32..6000],
        ) {
            let info = Info {
                scheme: 5,
                m: fields[0],
                d: fields[1],
                bits: fields[2],
                plain_bits: fields[3],
                tokens: fields[4],
                server_threads: threads,
                device: fields[9] % 3,
                keyswitch: fields[7] % 4,
                max_shared: fields[8] % 20,
                session_tokens: session,
                decode_tokens: decode,
                max_tokens: fields[5],
                max_frame: fields[6],
            };
            let plausible = info.m > 0
                && info.d > 0
                && (1..=64).contains(&info.plain_bits)
                && (1..=info.tokens).contains(&info.max_tokens)
                && (1..=fastquery_net::frame::MAX_SERVER_THREADS).contains(&threads)
                && info.device < 2
                && info.keyswitch < 3
                && (1..=16).contains(&info.max_shared)
                && decode <= session;
            match Info::decode(&info.encode()) {
                Ok(got) => {
                    prop_assert!(plausible && got == info);
                    // Every session length is plausible; 0 is a session without end.
                    let inputs = got.inputs();
                    prop_assert_eq!(inputs.session_tokens, (session > 0).then_some(session as usize));
                    let again = Info::new(got.scheme, &inputs, got.max_tokens as usize, got.max_frame as usize);
                    prop_assert_eq!(again.unwrap(), info);
                    // A declared session of no tokens, or of more than a u32 holds, is refused.
                    for bad in [Some(0), Some(u32::MAX as usize + 1)] {
                        let bad = fastquery_protocol::harness::DesignInputs { session_tokens: bad, ..inputs };
                        prop_assert!(Info::new(got.scheme, &bad, got.max_tokens as usize, got.max_frame as usize).is_err());
                    }
                }
                Err(e) => prop_assert!(!plausible && e.to_string().contains("implausible"), "{e}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_a_trusting_client_and_refuses_the_rest() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    let server_tls = fastquery_net::tls::server_config(cert.as_bytes(), key.as_bytes()).unwrap();
    let run = start(SchemeKind::FastQuery, 4, |c| {
        c.tls = Some(server_tls);
        c.idle_timeout = Duration::from_secs(5);
    })
    .await;
    let addr = run.addr.to_string();
    // A client trusting the certificate: answers as over plain TCP.
    let mut cfg = run.config();
    cfg.tls = Some((fastquery_net::tls::client_config(cert.as_bytes()).unwrap(), "localhost".into()));
    let mut client = Client::connect(&addr, cfg.clone()).await.unwrap();
    let r = client.query(&[1, 2, 3]).await.unwrap();
    run.check(&[1, 2, 3], &r);
    client.close().await.unwrap();
    // A certificate for another name, or another CA: the handshake fails, clearly.
    let mut wrong_name = cfg.clone();
    wrong_name.tls =
        Some((fastquery_net::tls::client_config(cert.as_bytes()).unwrap(), "example.org".into()));
    let e = Client::connect(&addr, wrong_name).await.unwrap_err();
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let mut wrong_ca = cfg.clone();
    wrong_ca.tls =
        Some((fastquery_net::tls::client_config(other.cert.pem().as_bytes()).unwrap(), "localhost".into()));
    let e = Client::connect(&addr, wrong_ca).await.unwrap_err();
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    // A plain client gets no FastQuery answer from a TLS server.
    assert!(Client::connect(&addr, run.config()).await.is_err());
    // Bad PEM is an error, not a panic.
    assert!(fastquery_net::tls::server_config(b"junk", key.as_bytes()).is_err());
    assert!(fastquery_net::tls::server_config(cert.as_bytes(), b"junk").is_err());
    assert!(fastquery_net::tls::client_config(b"").is_err());
    run.stop().await;
}
