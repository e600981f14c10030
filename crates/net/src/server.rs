//! The server: accept loop, one task per connection, bounded work.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use fastquery_protocol::{
    SchemeServer, Shares,
    harness::{DesignInputs, SchemeKind},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, oneshot, watch},
    task::JoinSet,
    time::timeout,
};
use tracing::{info, warn};

use crate::{
    NetError,
    frame::{Code, Frame, Hello, Info, Kind, decode_query, encode_response, read_frame, write_frame},
};

/// Where the server's shares go: called with the request id and the shares, before the
/// response is sent (a failure fails the request, so no client holds shares whose other half
/// was lost).
pub type ShareSink = Arc<dyn Fn(u64, &Shares) -> Result<(), String> + Send + Sync>;

/// A sink writing `<dir>/<request id as 16 hex digits>.npy` (`uint64`, tokens x d).
pub fn npy_sink(dir: PathBuf) -> ShareSink {
    Arc::new(move |id, shares| {
        let path = dir.join(format!("{id:016x}.npy"));
        crate::write_npy(&path, shares).map_err(|e| format!("writing {}: {e}", path.display()))
    })
}

/// Limits and access control.
#[derive(Clone)]
pub struct ServerConfig {
    /// The pre-shared token clients must present.
    pub token: Vec<u8>,
    /// Largest frame accepted (setup messages with Galois keys reach ~20 MB).
    pub max_frame: usize,
    /// Most tokens in one request (at most the batch the design was made for).
    pub max_tokens: usize,
    /// Most sessions open at once.
    pub max_sessions: usize,
    /// Most connections at once, authorised or not (a connection beyond it is closed at once).
    pub max_connections: usize,
    /// A connection silent this long is closed (also bounds a frame that stops halfway).
    pub idle_timeout: Duration,
    /// Batches computed at once (each on a blocking thread).
    pub workers: usize,
    /// How long the first query of a batch waits for others to join it. Queries that arrive
    /// together (any sessions) are answered in one pass over the table.
    pub batch_window: Duration,
    /// Most queries in one batch.
    pub max_batch: usize,
    /// TLS (see [`crate::tls::server_config`]); `None`: plain TCP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("ServerConfig")
            .field("max_frame", &self.max_frame)
            .field("max_tokens", &self.max_tokens)
            .field("max_sessions", &self.max_sessions)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("workers", &self.workers)
            .field("batch_window", &self.batch_window)
            .field("max_batch", &self.max_batch)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Defaults for `token`: 64 MiB frames, 64 sessions, 60 s idle, a worker per core, and
    /// `max_tokens` set by [`Server::new`] to the design's batch.
    pub fn new(token: Vec<u8>) -> Self {
        Self {
            token,
            max_frame: 64 << 20,
            max_tokens: usize::MAX,
            max_sessions: 64,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(60),
            workers: std::thread::available_parallelism().map_or(1, |c| c.get()),
            batch_window: Duration::from_millis(2),
            max_batch: 32,
            tls: None,
        }
    }
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    /// Batches computed (each one pass over the table), and the queries in them.
    pub batches: AtomicU64,
    pub batched_queries: AtomicU64,
}

/// One query waiting for its batch.
struct Job {
    session: u64,
    payload: Vec<u8>,
    reply: oneshot::Sender<Result<(Vec<u8>, Shares), NetError>>,
}

/// The largest `Hello` accepted before the client is authorised.
const HELLO_MAX: usize = 4096;

/// A server for one scheme over one preprocessed table.
pub struct Server {
    scheme: Arc<dyn SchemeServer>,
    info: Info,
    cfg: ServerConfig,
    sink: Option<ShareSink>,
    sessions: AtomicUsize,
    /// Request ids: a random 32-bit prefix per server start, then a counter.
    next_request: AtomicU64,
    /// Bounds scheme work on blocking threads (key setups and batches together) to `workers`.
    work: Arc<Semaphore>,
    stats: ServerStats,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("info", &self.info).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `scheme`, built by `kind` on the design `inputs` (which clients are told:
    /// they derive the same design from them).
    pub fn new(
        scheme: Arc<dyn SchemeServer>,
        kind: SchemeKind,
        inputs: DesignInputs,
        mut cfg: ServerConfig,
        sink: Option<ShareSink>,
    ) -> Result<Arc<Self>, NetError> {
        let tokens = inputs.tokens;
        if tokens == 0 {
            return Err(NetError::Invalid("a design for 0 tokens per request".into()));
        }
        let batch = if kind.batches_tokens() { tokens } else { 1 };
        cfg.max_tokens = cfg.max_tokens.min(batch);
        if cfg.token.len() < 16 {
            return Err(NetError::Invalid("the access token must have at least 16 bytes".into()));
        }
        if cfg.workers == 0
            || cfg.max_sessions == 0
            || cfg.max_connections == 0
            || cfg.max_frame < HELLO_MAX
            || cfg.max_batch == 0
        {
            return Err(NetError::Invalid(format!("unusable limits {cfg:?}")));
        }
        let info = Info::new(kind.id(), &inputs, cfg.max_tokens, cfg.max_frame)
            .map_err(|e| NetError::Invalid(format!("unusable design inputs: {e}")))?;
        let prefix = u64::from(rand::random::<u32>()) << 32;
        Ok(Arc::new(Self {
            scheme,
            info,
            work: Arc::new(Semaphore::new(cfg.workers)),
            cfg,
            sink,
            sessions: AtomicUsize::new(0),
            next_request: AtomicU64::new(prefix),
            stats: ServerStats::default(),
        }))
    }

    /// What clients are told.
    pub fn info(&self) -> Info {
        self.info
    }

    /// Counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Serves connections from `listener` until `shutdown` completes; then accepts no more,
    /// lets every running request finish and its response go out (idle connections are told
    /// the server is shutting down), and returns.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NetError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (jobs, queue) = mpsc::channel::<Job>(4 * self.cfg.max_batch.max(64));
        let batcher = tokio::spawn(self.clone().batcher(queue));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        self.stats.connections.fetch_add(1, Ordering::Relaxed);
                        if tasks.len() >= self.cfg.max_connections {
                            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                            warn!(%peer, limit = self.cfg.max_connections, "too many connections: closed");
                            drop(stream);
                            continue;
                        }
                        let server = self.clone();
                        let stop = stop_rx.clone();
                        let jobs = jobs.clone();
                        tasks.spawn(async move { server.connection(stream, peer, stop, jobs).await });
                    }
                    // Out of file descriptors and the like: log, back off, go on.
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reap finished connections so the set does not grow.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!(open = tasks.len(), "shutting down: no new connections");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        drop(jobs);
        let _ = batcher.await;
        info!("shut down");
        Ok(())
    }

    /// Collects queries that arrive within `batch_window` of each other (up to `max_batch`) and
    /// answers each group with one `answer_many` on a blocking thread, at most `workers`
    /// batches at once.
    async fn batcher(self: Arc<Self>, mut queue: mpsc::Receiver<Job>) {
        while let Some(first) = queue.recv().await {
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.cfg.batch_window;
            while batch.len() < self.cfg.max_batch {
                match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
            let Ok(permit) = self.work.clone().acquire_owned().await else { return };
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats.batched_queries.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let scheme = self.scheme.clone();
            tokio::spawn(async move {
                let (replies, inputs): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|j| (j.reply, (j.session, j.payload))).unzip();
                let answers = tokio::task::spawn_blocking(move || {
                    let refs: Vec<(u64, &[u8])> = inputs.iter().map(|(s, p)| (*s, &p[4..])).collect();
                    scheme.answer_many(&refs)
                })
                .await;
                drop(permit);
                match answers {
                    Ok(answers) => {
                        for (reply, a) in replies.into_iter().zip(answers) {
                            let _ = reply.send(a.map_err(NetError::from));
                        }
                    }
                    // A panic in the scheme fails this batch's requests, not the server.
                    Err(e) => {
                        for reply in replies {
                            let _ = reply
                                .send(Err(NetError::Invalid(format!("the batch's computation failed: {e}"))));
                        }
                    }
                }
            });
        }
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        stop: watch::Receiver<bool>,
        jobs: mpsc::Sender<Job>,
    ) {
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn crate::tls::Stream> = match &self.cfg.tls {
            None => Box::new(stream),
            Some(cfg) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(cfg.clone());
                match timeout(self.cfg.idle_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        warn!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        warn!(%peer, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        match self.session(&mut rd, &mut wr, peer, stop, &jobs).await {
            Ok(()) => info!(%peer, "connection closed"),
            Err((code, e)) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, error = %e, "connection ended with an error");
                // Best effort: the peer may already be gone.
                let _ = timeout(
                    Duration::from_secs(1),
                    write_frame(&mut wr, &Frame::error(code, &e.to_string())),
                )
                .await;
            }
        }
    }

    /// Reads the next frame within the idle timeout, or learns that the server is stopping.
    async fn next<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        limit: usize,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Frame>, (Code, NetError)> {
        if *stop.borrow() {
            return Err((Code::ShuttingDown, NetError::Invalid("the server is shutting down".into())));
        }
        tokio::select! {
            r = timeout(self.cfg.idle_timeout, read_frame(rd, limit)) => match r {
                Err(_) => Err((Code::BadFrame, NetError::Timeout(format!("no complete frame in {:?}", self.cfg.idle_timeout)))),
                Ok(Err(e @ NetError::TooLarge { .. })) => Err((Code::Limit, e)),
                Ok(Err(e)) => Err((Code::BadFrame, e)),
                Ok(Ok(f)) => Ok(f),
            },
            _ = stop.changed() => Err((Code::ShuttingDown, NetError::Invalid("the server is shutting down".into()))),
        }
    }

    async fn session<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &self,
        rd: &mut R,
        wr: &mut W,
        peer: SocketAddr,
        mut stop: watch::Receiver<bool>,
        jobs: &mpsc::Sender<Job>,
    ) -> Result<(), (Code, NetError)> {
        let io = |e: NetError| (Code::Internal, e);
        // 1. Hello: small, and checked before anything else is allocated.
        let Some(hello) = self.next(rd, HELLO_MAX, &mut stop).await? else { return Ok(()) };
        if hello.kind != Kind::Hello {
            return Err((
                Code::BadFrame,
                NetError::Malformed(format!("expected Hello, got {:?}", hello.kind)),
            ));
        }
        let hello = Hello::decode(&hello.payload).map_err(|e| (Code::BadFrame, e))?;
        if !constant_time_eq(&hello.token, &self.cfg.token) {
            return Err((Code::Unauthorised, NetError::Invalid("wrong access token".into())));
        }
        if hello.scheme != 0 && hello.scheme != self.info.scheme {
            let name = |id| SchemeKind::from_id(id).map_or("unknown", |k| k.name());
            return Err((
                Code::WrongScheme,
                NetError::Invalid(format!(
                    "this server runs {}, the client asked for {}",
                    name(self.info.scheme),
                    name(hello.scheme)
                )),
            ));
        }
        // 2. A session slot.
        let taken = self.sessions.fetch_add(1, Ordering::AcqRel);
        let _slot = SlotGuard(&self.sessions);
        if taken >= self.cfg.max_sessions {
            return Err((
                Code::Busy,
                NetError::Invalid(format!("{} sessions open, the limit", self.cfg.max_sessions)),
            ));
        }
        write_frame(wr, &Frame::new(Kind::Info, self.info.encode())).await.map_err(io)?;
        // 3. Setup: the client's keys.
        let Some(setup) = self.next(rd, self.cfg.max_frame, &mut stop).await? else { return Ok(()) };
        if setup.kind != Kind::Setup {
            return Err((
                Code::BadFrame,
                NetError::Malformed(format!("expected Setup, got {:?}", setup.kind)),
            ));
        }
        let scheme = self.scheme.clone();
        let session = self
            .blocking(move || scheme.open_session(&setup.payload))
            .await
            .map_err(|e| (Code::Protocol, e))?;
        let _close = SessionGuard(&*self.scheme, session);
        write_frame(wr, &Frame::new(Kind::Ready, session.to_le_bytes().to_vec())).await.map_err(io)?;
        info!(%peer, session, "session open");
        // 4. Queries until Bye or end of stream.
        loop {
            let Some(frame) = self.next(rd, self.cfg.max_frame, &mut stop).await? else { return Ok(()) };
            match frame.kind {
                Kind::Bye => return Ok(()),
                Kind::Query => {}
                other => {
                    return Err((
                        Code::BadFrame,
                        NetError::Malformed(format!("expected Query or Bye, got {other:?}")),
                    ));
                }
            }
            let reply = match self.request(session, frame.payload, jobs).await {
                Ok(f) => f,
                // A refused request leaves the session usable.
                Err((code, e)) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, session, error = %e, "request refused");
                    Frame::error(code, &e.to_string())
                }
            };
            write_frame(wr, &reply).await.map_err(io)?;
        }
    }

    async fn request(
        &self,
        session: u64,
        payload: Vec<u8>,
        jobs: &mpsc::Sender<Job>,
    ) -> Result<Frame, (Code, NetError)> {
        let (count, _) = decode_query(&payload).map_err(|e| (Code::BadFrame, e))?;
        if count == 0 || count as usize > self.cfg.max_tokens {
            return Err((
                Code::Limit,
                NetError::Invalid(format!(
                    "{count} tokens in one request (1 to {} allowed)",
                    self.cfg.max_tokens
                )),
            ));
        }
        // decode_query succeeded: the first four bytes are the count (the batcher skips them).
        let (reply, answer) = oneshot::channel();
        let stopping = || (Code::ShuttingDown, NetError::Invalid("the server is stopping".into()));
        jobs.send(Job { session, payload, reply }).await.map_err(|_| stopping())?;
        let (response, shares) = answer.await.map_err(|_| stopping())?.map_err(|e| (Code::Protocol, e))?;
        if shares.tokens != count as usize {
            return Err((
                Code::Protocol,
                NetError::Malformed(format!(
                    "the query holds {} tokens, the frame said {count}",
                    shares.tokens
                )),
            ));
        }
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        if let Some(sink) = &self.sink {
            sink(id, &shares).map_err(|e| (Code::Internal, NetError::Invalid(e)))?;
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        info!(session, request = format!("{id:016x}"), tokens = count, bytes = response.len(), "answered");
        Ok(Frame::new(Kind::Response, encode_response(id, &response)))
    }

    /// Runs scheme work on a blocking thread, at most `workers` at once. A panic in it is an
    /// error for this request, not the end of the server.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, fastquery_protocol::ProtocolError> + Send + 'static,
    ) -> Result<T, NetError> {
        let _permit =
            self.work.acquire().await.map_err(|_| NetError::Invalid("the server is stopping".into()))?;
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => r.map_err(NetError::from),
            Err(e) => Err(NetError::Invalid(format!("the request's computation failed: {e}"))),
        }
    }
}

/// Releases a session slot.
struct SlotGuard<'a>(&'a AtomicUsize);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Forgets a session's keys when its connection ends, however it ends.
struct SessionGuard<'a>(&'a dyn SchemeServer, u64);

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.0.close_session(self.1);
    }
}

/// Equality that takes the same time wherever the inputs first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
