//! The client: connect, hand over keys once, query.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use fastquery_protocol::{SchemeClient, Shares, harness::SchemeKind};
use tokio::{net::TcpStream, time::timeout};

use crate::{
    NetError,
    frame::{Frame, Hello, Info, Kind, decode_response, encode_query, read_frame, write_frame},
};

/// How to connect.
#[derive(Clone)]
pub struct ClientConfig {
    /// The pre-shared token.
    pub token: Vec<u8>,
    /// The scheme expected (`None`: whatever the server runs).
    pub scheme: Option<SchemeKind>,
    /// Longest wait for the server at each step (connecting, keys, each answer).
    pub timeout: Duration,
    /// Largest frame accepted from the server.
    pub max_frame: usize,
    /// TLS: the client configuration (trusted roots) and the name the server's certificate
    /// must carry; `None`: plain TCP.
    pub tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("scheme", &self.scheme)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.as_ref().map(|t| &t.1))
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults: any scheme, 120 s per step, 256 MiB frames.
    pub fn new(token: Vec<u8>) -> Self {
        Self { token, scheme: None, timeout: Duration::from_secs(120), max_frame: 256 << 20, tls: None }
    }
}

/// One query's outcome.
#[derive(Clone, Debug)]
pub struct QueryResult {
    /// The server's request ids (one per batch the query was split into).
    pub requests: Vec<u64>,
    /// The client's shares, one row per token in the order asked.
    pub shares: Shares,
    /// Bytes sent and received for this query (frames included).
    pub sent: usize,
    pub received: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl QueryResult {
    /// This query followed by `next` on the same session: their requests, shares (rows in
    /// order), bytes and times together.
    pub fn then(mut self, next: QueryResult) -> QueryResult {
        self.requests.extend(next.requests);
        self.shares.tokens += next.shares.tokens;
        self.shares.values.extend_from_slice(&next.shares.values);
        self.sent += next.sent;
        self.received += next.received;
        self.elapsed += next.elapsed;
        self
    }
}

/// The connection: frames each way with a timeout, and the bytes counted each way.
struct Link {
    stream: Box<dyn crate::tls::Stream>,
    timeout: Duration,
    max_frame: usize,
    sent: usize,
    received: usize,
}

impl Link {
    async fn send(&mut self, frame: &Frame) -> Result<(), NetError> {
        timeout(self.timeout, write_frame(&mut self.stream, frame))
            .await
            .map_err(|_| NetError::Timeout("sending to the server".into()))??;
        self.sent += 5 + frame.payload.len();
        Ok(())
    }

    /// The next frame, which must be of `kind` (an `Error` frame becomes [`NetError::Refused`]).
    async fn expect(&mut self, kind: Kind) -> Result<Frame, NetError> {
        let f = timeout(self.timeout, read_frame(&mut self.stream, self.max_frame))
            .await
            .map_err(|_| NetError::Timeout(format!("waiting for the server's {kind:?}")))??
            .ok_or_else(|| NetError::Malformed("the server closed the connection".into()))?;
        self.received += 5 + f.payload.len();
        match f.kind {
            k if k == kind => Ok(f),
            Kind::Error => {
                let (code, text) = f.parse_error()?;
                Err(NetError::Refused { code, text })
            }
            other => Err(NetError::Malformed(format!("expected {kind:?} from the server, got {other:?}"))),
        }
    }
}

/// A connected client with an open session.
pub struct Client {
    link: Link,
    scheme: Box<dyn SchemeClient>,
    kind: SchemeKind,
    info: Info,
    /// Bytes of the handshake (hello, info, keys, ready), both ways.
    setup_bytes: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("scheme", &self.kind).field("info", &self.info).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr`, authenticates, derives the scheme's design from the server's
    /// parameters, and sends the keys.
    pub async fn connect(addr: &str, cfg: ClientConfig) -> Result<Self, NetError> {
        let unreachable = |reason: String| NetError::Unreachable { addr: addr.to_string(), reason };
        let stream = match timeout(cfg.timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(unreachable(format!("no connection in {:?}", cfg.timeout))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(unreachable("connection refused (is `fastquery serve` running there?)".into()));
            }
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn crate::tls::Stream> = match &cfg.tls {
            None => Box::new(stream),
            Some((tls, name)) => {
                let connector = tokio_rustls::TlsConnector::from(tls.clone());
                let server_name = crate::tls::server_name(name)?;
                match timeout(cfg.timeout, connector.connect(server_name, stream)).await {
                    Err(_) => return Err(unreachable(format!("no TLS handshake in {:?}", cfg.timeout))),
                    Ok(Err(e)) => return Err(unreachable(format!("TLS handshake failed: {e}"))),
                    Ok(Ok(s)) => Box::new(s),
                }
            }
        };
        let hello = Hello { scheme: cfg.scheme.map_or(0, |k| k.id()), token: cfg.token.clone() };
        if hello.token.len() > u16::MAX as usize {
            return Err(NetError::Invalid("access token too long".into()));
        }
        let mut link = Link { stream, timeout: cfg.timeout, max_frame: cfg.max_frame, sent: 0, received: 0 };
        link.send(&Frame::new(Kind::Hello, hello.encode())).await?;
        let info = Info::decode(&link.expect(Kind::Info).await?.payload)?;
        let kind = SchemeKind::from_id(info.scheme).ok_or_else(|| {
            NetError::Malformed(format!("the server runs an unknown scheme (id {})", info.scheme))
        })?;
        if let Some(want) = cfg.scheme
            && want != kind
        {
            return Err(NetError::Invalid(format!("the server runs {}, not {}", kind.name(), want.name())));
        }
        // Key generation is heavy: off the async threads.
        let (scheme, setup) = tokio::task::spawn_blocking(move || {
            let mut s = kind.client(&info.inputs())?;
            let setup = s.setup()?;
            Ok::<_, fastquery_protocol::ProtocolError>((s, setup))
        })
        .await
        .map_err(|e| NetError::Invalid(format!("key generation failed: {e}")))??;
        link.send(&Frame::new(Kind::Setup, setup)).await?;
        link.expect(Kind::Ready).await?;
        let setup_bytes = link.sent + link.received;
        Ok(Self { link, scheme, kind, info, setup_bytes })
    }

    /// What the server runs.
    pub fn info(&self) -> Info {
        self.info
    }

    /// The scheme.
    pub fn scheme(&self) -> SchemeKind {
        self.kind
    }

    /// Bytes of the handshake (keys included), both ways.
    pub fn setup_bytes(&self) -> usize {
        self.setup_bytes
    }

    /// Queries `ids` (split into the server's batch size), returning the client's shares.
    pub async fn query(&mut self, ids: &[usize]) -> Result<QueryResult, NetError> {
        if ids.is_empty() {
            return Err(NetError::Invalid("no token ids".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&k| k >= self.info.m as usize) {
            return Err(NetError::Invalid(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.info.m
            )));
        }
        let t = Instant::now();
        let (sent, received) = (self.link.sent, self.link.received);
        let mut shares = Shares::zeros(0, self.info.d as usize, self.info.plain_bits);
        let mut requests = Vec::new();
        for batch in ids.chunks(self.info.max_tokens as usize) {
            let q = self.scheme.query(batch)?;
            self.link.send(&Frame::new(Kind::Query, encode_query(batch.len() as u32, &q))).await?;
            let f = self.link.expect(Kind::Response).await?;
            let (id, response) = decode_response(&f.payload)?;
            let part = self.scheme.decode(response)?;
            shares.tokens += part.tokens;
            shares.values.extend_from_slice(&part.values);
            requests.push(id);
        }
        Ok(QueryResult {
            requests,
            shares,
            sent: self.link.sent - sent,
            received: self.link.received - received,
            elapsed: t.elapsed(),
        })
    }

    /// Says goodbye (the server forgets the session's keys).
    pub async fn close(mut self) -> Result<(), NetError> {
        self.link.send(&Frame::new(Kind::Bye, Vec::new())).await
    }
}
