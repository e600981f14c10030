//! `fastquery serve`, `fastquery query`, and the demo's loopback run: the networked server and
//! client of `fastquery-net` on the command line.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use fastquery_net::{Client, ClientConfig, Server, ServerConfig, ShareSink, npy_sink};
use fastquery_protocol::{
    SchemeClient, SchemeServer, Shares,
    harness::{DesignInputs, SchemeKind, SelfCheck, self_check},
    shards::Shards,
};
use fastquery_table::IntTable;
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::{AnyBackend, BackendKind};

/// Arguments of `fastquery serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Table: a synthetic workload (tiny, llama-7b, llama-30b), `smollm2`, or a .gguf,
    /// .safetensors or .npy file.
    #[arg(long, default_value = "tiny")]
    table: String,
    /// Tensor to read from a file (default: GGUF token_embd.weight, or the file's only tensor).
    #[arg(long)]
    tensor: Option<String>,
    /// Address to listen on (port 0 picks a free port, printed).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// File holding the pre-shared access token (at least 16 bytes; surrounding whitespace
    /// ignored).
    #[arg(long)]
    auth_token_file: PathBuf,
    /// Scheme (cheetah, iron, bumblebee, fastquery, fastquery-wan, fastquery-lan).
    #[arg(long, default_value = "fastquery")]
    scheme: String,
    /// Tokens per request the design is made for (the most one request may carry).
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// The design inputs the server tells its clients.
    #[command(flatten)]
    design: crate::bench::DesignArgs,
    /// Write the server's shares of each request to `<dir>/<request id>.npy`.
    #[arg(long)]
    shares_dir: Option<PathBuf>,
    /// Most sessions open at once.
    #[arg(long, default_value_t = 64)]
    max_sessions: usize,
    /// Most connections at once, authorised or not.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds a connection may stay silent.
    #[arg(long, default_value_t = 60)]
    idle_timeout_s: u64,
    /// Largest message accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    max_frame_mb: usize,
    /// Batches computed at once (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Milliseconds the first query of a batch waits for others (0: no waiting). A batch reads
    /// the table once: a gain where the table product is memory-bound (GPUs), none on a small
    /// CPU where it is compute-bound (docs/BENCHMARKS.md).
    #[arg(long, default_value_t = 2)]
    batch_window_ms: u64,
    /// Most queries in one batch.
    #[arg(long, default_value_t = 32)]
    max_batch: usize,
    /// Seed of a synthetic table.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Devices to serve from, e.g. `0,1,2,3` (--backend cuda: CUDA ordinals; cuda-emulator: as
    /// many emulated devices): a copy of the preprocessed table on each, each session placed on
    /// the device with the fewest open sessions, and a batch's queries answered on their
    /// sessions' devices at once. A device named twice (`0,0`) holds two copies, each answered
    /// on a stream of its own, so that one GPU answers two batches at once. Default: device 0
    /// alone.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<usize>,
    /// Requests the server answers itself before it listens (random tokens, --tokens per
    /// request; every share checked against the table; 0 skips it): a backend or table that
    /// answers wrongly never serves, and the first client does not pay for the request's
    /// fresh memory.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=100))]
    self_check: u64,
    /// TLS: the server's PEM certificate chain (with --tls-key). Without it the access token
    /// travels in clear: plain TCP belongs on a private network.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Arguments of `fastquery query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The server, `host:port`.
    #[arg(long)]
    server: String,
    /// File holding the pre-shared access token.
    #[arg(long)]
    auth_token_file: PathBuf,
    /// Where to write the client's shares (`.npy`, uint64, tokens x d).
    #[arg(long)]
    out: PathBuf,
    /// Token ids.
    #[arg(long, value_delimiter = ',')]
    tokens: Vec<usize>,
    /// Of the token ids, the last this many are sent one per request after the others, on the
    /// same session: the steps of autoregressive decoding after a prompt (0: every id in
    /// requests of the server's batch).
    #[arg(long, default_value_t = 0)]
    decode_steps: usize,
    /// Text to tokenize instead of --tokens (with the tokenizer of --tokenizer).
    #[arg(long)]
    text: Option<String>,
    /// The GGUF whose tokenizer --text uses: `smollm2` or a path (the server's table file).
    #[arg(long, default_value = "smollm2")]
    tokenizer: String,
    /// The scheme expected (refused if the server runs another).
    #[arg(long)]
    scheme: Option<String>,
    /// Seconds to wait for the server at each step.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// TLS: trust the PEM certificates in this file (a private CA or the server's own).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry (default: the host of --server).
    #[arg(long, requires = "tls_ca")]
    tls_name: Option<String>,
}

fn read_token(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim_ascii().to_vec();
    if token.len() < 16 {
        anyhow::bail!("the token in {} has {} bytes; at least 16 are needed", path.display(), token.len());
    }
    Ok(token)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// The scheme's server over `table` on the opened backend, with the scheme's own client (for
/// the self-check), and the design inputs its clients are told.
type Built = (Arc<dyn SchemeServer>, Box<dyn SchemeClient>, DesignInputs);

/// Builds [`Built`].
fn build_server(
    backend: &AnyBackend,
    kind: SchemeKind,
    table: &IntTable,
    tokens: usize,
    design: crate::bench::DesignArgs,
) -> anyhow::Result<Built> {
    let inputs = design.apply(backend.design_inputs(table, kind.default_plain_bits(), tokens)?)?;
    let (server, client) = crate::with_backend!(backend, b => kind.build_for(b.clone(), table, &inputs)?);
    Ok((Arc::from(server), client, inputs))
}

/// The backends `serve` runs on: `--devices`, or device 0 of `kind`.
fn open_devices(
    kind: BackendKind,
    threads: Option<usize>,
    devices: &[usize],
) -> anyhow::Result<Vec<AnyBackend>> {
    if devices.is_empty() {
        return Ok(vec![kind.open(threads)?]);
    }
    if !kind.has_devices() {
        anyhow::bail!(
            "--devices needs --backend cuda (or cuda-emulator); the {kind:?} backend has one device"
        );
    }
    // A device named again holds another copy of the table, answered on a stream of its own.
    devices
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            kind.open_device(threads, d, devices[..i].contains(&d))
                .with_context(|| format!("opening device {d}"))
        })
        .collect()
}

/// `fastquery serve`.
pub fn serve(backend_kind: BackendKind, threads: Option<usize>, args: &ServeArgs) -> anyhow::Result<bool> {
    let token = read_token(&args.auth_token_file)?;
    let kind = SchemeKind::parse(&args.scheme)?;
    if args.tokens == 0 {
        anyhow::bail!("--tokens must be at least 1");
    }
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
    let backends = open_devices(backend_kind, threads, &args.devices)?;
    let devices = backends.len();
    // A device by its ordinal (`--devices` names them; Shards' errors count them in that order).
    let ordinal = |k: usize| args.devices.get(k).copied().unwrap_or(k);
    let bar = ProgressBar::new(2 + devices as u64).with_style(
        ProgressStyle::with_template("{bar:20} {pos}/{len} {msg} ({elapsed})").expect("a valid template"),
    );
    bar.set_message(format!("loading {}", args.table));
    let (name, real, _, _) = crate::quantize::resolve_table(&args.table, args.tensor.as_deref(), args.seed)?;
    bar.inc(1);
    bar.set_message(if kind.is_fastquery() { "quantizing" } else { "encoding in fixed point" });
    let table = kind.table(&real)?;
    drop(real);
    bar.inc(1);
    // A server and a client (for its self-check) per device, all of one design, the devices
    // preprocessing at once.
    let on = if devices > 1 { format!(" ({devices} devices at once)") } else { String::new() };
    bar.set_message(format!("preprocessing on {}{on}", backends[0].info().name));
    let mut built: Vec<Built> = std::thread::scope(|scope| {
        let (table, bar) = (&table, &bar);
        let running: Vec<_> = backends
            .iter()
            .enumerate()
            .map(|(k, backend)| {
                scope.spawn(move || {
                    let b = build_server(backend, kind, table, args.tokens, args.design)
                        .with_context(|| format!("preprocessing on device {}", ordinal(k)));
                    bar.inc(1);
                    b
                })
            })
            .collect();
        running
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("preprocessing panicked"))))
            .collect::<anyhow::Result<_>>()
    })?;
    let inputs = built[0].2;
    if let Some(k) = built.iter().position(|b| b.2 != inputs) {
        anyhow::bail!(
            "device {} derives other design inputs than device {} (not the same kind of device?)",
            ordinal(k),
            ordinal(0)
        );
    }
    // Every device answers its own self-check: one that answers wrongly never serves.
    let checked = if args.self_check > 0 {
        bar.set_message(format!("self-check: {} request(s) on each of {devices} device(s)", args.self_check));
        let plain = kind.default_plain_bits();
        let requests = args.self_check as usize;
        let mut all: Option<SelfCheck> = None;
        for (k, (scheme, client, _)) in built.iter_mut().enumerate() {
            let seed = args.seed ^ 0x5e1f ^ k as u64;
            let c = self_check(
                kind,
                scheme.as_ref(),
                client.as_mut(),
                &table,
                plain,
                args.tokens,
                requests,
                seed,
            )
            .with_context(|| {
                format!("the server's self-check failed on device {}; not serving", ordinal(k))
            })?;
            all = Some(match all {
                None => c,
                Some(a) => SelfCheck { server_ms: a.server_ms + c.server_ms, ..a },
            });
        }
        all
    } else {
        None
    };
    let servers: Vec<Arc<dyn SchemeServer>> = built.into_iter().map(|(s, _, _)| s).collect();
    let scheme: Arc<dyn SchemeServer> = match <[_; 1]>::try_from(servers) {
        Ok([one]) => one,
        Err(servers) => Arc::new(Shards::new(servers)?),
    };
    bar.finish_with_message("ready");
    let mut cfg = ServerConfig::new(token);
    cfg.max_sessions = args.max_sessions;
    cfg.max_connections = args.max_connections;
    cfg.idle_timeout = Duration::from_secs(args.idle_timeout_s.max(1));
    cfg.max_frame = args.max_frame_mb.max(1) << 20;
    if let Some(w) = args.workers {
        cfg.workers = w;
    }
    cfg.batch_window = Duration::from_millis(args.batch_window_ms);
    cfg.max_batch = args.max_batch;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        cfg.tls = Some(fastquery_net::tls::server_config_from_files(cert, key)?);
    }
    let tls = cfg.tls.is_some();
    let sink = match &args.shares_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Some(npy_sink(dir.clone()))
        }
        None => None,
    };
    let summary = scheme.summary();
    let on = match devices {
        1 => backends[0].info().name.to_string(),
        _ => {
            let list: Vec<String> = args.devices.iter().map(|d| d.to_string()).collect();
            format!("{} (devices {})", backends[0].info().name, list.join(", "))
        }
    };
    let server = Server::new(scheme, kind, inputs, cfg, sink)?;
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        // The server's status lines must not take it down when nobody reads its stdout any more
        // (println! panics on a closed pipe): write and ignore errors.
        use std::io::Write;
        let mut out = std::io::stdout();
        if let Some(c) = checked {
            let _ = writeln!(
                out,
                "self-check: {} request(s) of {} token(s){} answered{} and every share verified ({:.1} ms of server time)",
                c.requests,
                c.tokens,
                if c.single > 0 { " and one of a single token" } else { "" },
                if devices > 1 { format!(" on each of {devices} devices") } else { String::new() },
                c.server_ms
            );
        }
        let _ = writeln!(
            out,
            "serving {} ({} x {}) with {} on {} at {} ({}), up to {} tokens per request{}",
            name,
            table.m(),
            table.d(),
            kind.name(),
            on,
            listener.local_addr()?,
            summary.layout,
            server.info().max_tokens,
            match server.info().session_tokens {
                0 => String::new(),
                t => format!(", designed for sessions of {t} tokens"),
            }
        );
        if args.shares_dir.is_none() {
            let _ = writeln!(out, "(no --shares-dir: the server's shares are discarded)");
        }
        if !tls {
            let _ = writeln!(out, "(no --tls-cert: plain TCP, the access token travels in clear)");
        }
        let _ = out.flush();
        server
            .serve(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        anyhow::Ok(())
    })?;
    Ok(true)
}

/// `fastquery query`.
pub fn query(args: &QueryArgs) -> anyhow::Result<bool> {
    let token = read_token(&args.auth_token_file)?;
    let ids: Vec<usize> = match &args.text {
        Some(text) => {
            if !args.tokens.is_empty() {
                anyhow::bail!("give --tokens or --text, not both");
            }
            let path = if args.tokenizer == "smollm2" {
                crate::quantize::smollm2_path()?
            } else {
                PathBuf::from(&args.tokenizer)
            };
            let gguf = fastquery_table::load::Gguf::open(&path)?;
            let tok = fastquery_eval::Tokenizer::from_gguf(&gguf)?;
            let ids = tok.encode(text)?;
            println!("{} tokens: {ids:?}", ids.len());
            ids.into_iter().map(|i| i as usize).collect()
        }
        None => args.tokens.clone(),
    };
    if ids.is_empty() {
        anyhow::bail!("no tokens: give --tokens 1,5,9 or --text \"...\"");
    }
    if args.decode_steps > ids.len() {
        anyhow::bail!("--decode-steps {} of {} tokens", args.decode_steps, ids.len());
    }
    let (prompt, steps) = ids.split_at(ids.len() - args.decode_steps);
    let mut cfg = ClientConfig::new(token);
    cfg.timeout = Duration::from_secs(args.timeout_s.max(1));
    cfg.scheme = args.scheme.as_deref().map(SchemeKind::parse).transpose()?;
    if let Some(ca) = &args.tls_ca {
        let host = args.server.rsplit_once(':').map_or(args.server.as_str(), |(h, _)| h);
        let name = args.tls_name.clone().unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
        cfg.tls = Some((fastquery_net::tls::client_config_from_file(ca)?, name));
    }
    let rt = runtime()?;
    let r = rt.block_on(async {
        let t = Instant::now();
        let mut client = Client::connect(&args.server, cfg).await?;
        let setup = (client.setup_bytes(), t.elapsed());
        let mut r = if prompt.is_empty() { None } else { Some(client.query(prompt).await?) };
        let mut step_times = Vec::with_capacity(steps.len());
        for &k in steps {
            let step = client.query(&[k]).await?;
            step_times.push(step.elapsed);
            r = Some(match r {
                None => step,
                Some(all) => all.then(step),
            });
        }
        let kind = client.scheme();
        let _ = client.close().await;
        let r = r.context("at least one token is sent")?;
        anyhow::Ok((r, setup, kind, step_times))
    })?;
    let (r, setup, kind, step_times) = r;
    fastquery_net::write_npy(&args.out, &r.shares)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let ids_hex: Vec<String> = r.requests.iter().map(|id| format!("{id:016x}")).collect();
    println!(
        "scheme {}: {} tokens, shares mod 2^{} written to {}",
        kind.name(),
        ids.len(),
        r.shares.plain_bits,
        args.out.display()
    );
    println!("  request id(s): {}", ids_hex.join(", "));
    println!(
        "  setup (keys, once): {} in {:.1} ms; query: {} sent, {} received in {:.1} ms",
        crate::bench::mb(setup.0 as f64),
        setup.1.as_secs_f64() * 1e3,
        crate::bench::mb(r.sent as f64),
        crate::bench::mb(r.received as f64),
        r.elapsed.as_secs_f64() * 1e3
    );
    if !step_times.is_empty() {
        let ms: Vec<f64> = step_times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
        let rank = |q| fastquery_protocol::session::nearest_rank(&ms, q).unwrap_or(0.0);
        println!(
            "  {} decode steps (one token per request) after {} prompt tokens: median {:.1} ms, slowest {:.1} ms",
            ms.len(),
            ids.len() - ms.len(),
            rank(0.5),
            rank(1.0)
        );
    }
    Ok(true)
}

/// The demo's networked half: a real server on loopback with a random token, a real client,
/// and the server's shares kept in memory to check the reconstruction. Returns whether every
/// share reconstructed, and prints bytes and time.
pub fn demo_over_loopback(
    backend: &AnyBackend,
    kind: SchemeKind,
    table: &IntTable,
    tokens: &[usize],
) -> anyhow::Result<bool> {
    let batch = tokens.len();
    let (scheme, _, inputs) = build_server(backend, kind, table, batch, crate::bench::DesignArgs::default())?;
    let token: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let store: Arc<Mutex<Vec<(u64, Shares)>>> = Arc::default();
    let s = store.clone();
    let sink: ShareSink = Arc::new(move |id, shares: &Shares| {
        s.lock().map_err(|_| "poisoned".to_string())?.push((id, shares.clone()));
        Ok(())
    });
    let plain = kind.default_plain_bits();
    let server = Server::new(scheme, kind, inputs, ServerConfig::new(token.clone()), Some(sink))?;
    let rt = runtime()?;
    let (r, setup_bytes) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        println!("server listening on {addr} (loopback, random access token); client connecting");
        let mut client = Client::connect(&addr.to_string(), ClientConfig::new(token)).await?;
        let setup = client.setup_bytes();
        let r = client.query(tokens).await?;
        client.close().await?;
        let _ = stop.send(());
        task.await??;
        anyhow::Ok((r, setup))
    })?;
    let store = store.lock().map_err(|_| anyhow::anyhow!("share store poisoned"))?;
    let mut server = Vec::new();
    for id in &r.requests {
        let Some((_, s)) = store.iter().find(|(i, _)| i == id) else {
            anyhow::bail!("the server kept no shares for request {id:016x}")
        };
        server.extend_from_slice(&s.values);
    }
    let server = Shares { tokens: tokens.len(), d: table.d(), plain_bits: plain, values: server };
    let ok = r
        .shares
        .reconstruct(&server)
        .is_ok_and(|got| fastquery_protocol::harness::rows_match(table, tokens, plain, &got));
    println!(
        "  over TCP: setup {} once, then {} sent and {} received in {:.1} ms (request {})",
        crate::bench::mb(setup_bytes as f64),
        crate::bench::mb(r.sent as f64),
        crate::bench::mb(r.received as f64),
        r.elapsed.as_secs_f64() * 1e3,
        r.requests.iter().map(|i| format!("{i:016x}")).collect::<Vec<_>>().join(", ")
    );
    Ok(ok)
}
