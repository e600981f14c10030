//! FastQuery's C interface, for 2PC frameworks written in C or C++ (or any language with a C
//! FFI): the four schemes of [`fastquery_protocol`] as functions from bytes to bytes, the
//! channel between the parties the caller's own. The declarations are `include/fastquery.h`;
//! `examples/query.c` is a whole query from C (built and run by this crate's tests).
//!
//! The server party builds an [`FqServer`] from its real-valued table (quantized for
//! `fastquery`, fixed point for the baselines) and hands the client party its hello
//! ([`fq_server_hello`]: the public design inputs, the same bytes `fastquery serve` sends); the
//! client party builds an [`FqClient`] from them. Then: the client's setup opens a session on
//! the server (keys, once), each query is answered with a response and the server's shares,
//! and the client decodes the response into its shares. `server + client mod 2^plain_bits`
//! are the quantized rows `Q`, with `real ~ scale[c] (Q - zero[c])` ([`fq_server_scales`]:
//! public).
//!
//! Conventions: every function returns [`FQ_OK`] or an error code and leaves the error's text
//! for [`fq_last_error`] (per thread); it never unwinds into C (a panic is caught and returned
//! as [`FQ_ERR_INTERNAL`]). Bytes and shares the library returns are the caller's to free with
//! [`fq_bytes_free`] and [`fq_shares_free`] (shares are zeroed first: they are secret). A
//! server may be used from several threads at once; a client by one thread at a time, one
//! query at a time (the next waits for this one's response to decode; a response refused as
//! malformed leaves the query pending).

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use fastquery_backend::Backend;
use fastquery_he::HeError;
use fastquery_net::frame::Info;
use fastquery_protocol::{
    ProtocolError, SchemeClient, SchemeServer, Shares,
    harness::{DesignInputs, SchemeKind},
    panic_message,
};
use fastquery_table::Table;
use zeroize::Zeroize;

/// Success.
pub const FQ_OK: i32 = 0;
/// A bad argument: a null pointer, a length that does not fit, an unknown scheme or backend.
pub const FQ_ERR_ARGUMENT: i32 = 1;
/// The other party's bytes or the order of calls were refused: a malformed or foreign
/// message, an unknown session, too many tokens, a token id out of range.
pub const FQ_ERR_PROTOCOL: i32 = 2;
/// The computation failed (a backend error, out of memory) or panicked; the object stays
/// usable where the failure was confined to the call.
pub const FQ_ERR_INTERNAL: i32 = 3;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A failed call: its code and its text.
struct Failure(i32, String);

impl Failure {
    fn argument(text: impl Into<String>) -> Self {
        Self(FQ_ERR_ARGUMENT, text.into())
    }

    fn protocol(e: impl std::fmt::Display) -> Self {
        Self(FQ_ERR_PROTOCOL, e.to_string())
    }

    /// A protocol-layer error: the backend's failures are [`FQ_ERR_INTERNAL`] (the caller's
    /// bytes were not at fault), the rest `code`.
    fn of(e: ProtocolError, code: i32) -> Self {
        let backend = matches!(e, ProtocolError::Backend(_) | ProtocolError::He(HeError::Backend(_)));
        Self(if backend { FQ_ERR_INTERNAL } else { code }, e.to_string())
    }
}

/// Runs `f`, records its failure (or panic) for [`fq_last_error`], and returns the code.
fn call(f: impl FnOnce() -> Result<(), Failure>) -> i32 {
    let (code, text) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => (FQ_OK, String::new()),
        Ok(Err(Failure(code, text))) => (code, text),
        Err(payload) => (FQ_ERR_INTERNAL, format!("internal error: {}", panic_message(payload.as_ref()))),
    };
    // An interior NUL cannot come from our messages; replace rather than lose the text.
    let text = CString::new(text.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
    code
}

/// The text of this thread's last failed call ("" after a call that succeeded). The pointer
/// stays valid until this thread's next call into the library.
#[unsafe(no_mangle)]
pub extern "C" fn fq_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Bytes the library returns: free with [`fq_bytes_free`].
#[repr(C)]
#[derive(Debug)]
pub struct FqBytes {
    pub data: *mut u8,
    pub len: usize,
}

impl FqBytes {
    const EMPTY: Self = Self { data: std::ptr::null_mut(), len: 0 };

    fn from_vec(v: Vec<u8>) -> Self {
        let b = v.into_boxed_slice();
        let len = b.len();
        Self { data: Box::into_raw(b).cast(), len }
    }
}

/// A party's additive shares: `tokens x d` values mod `2^plain_bits`, row-major. Free with
/// [`fq_shares_free`].
#[repr(C)]
#[derive(Debug)]
pub struct FqShares {
    pub values: *mut u64,
    pub tokens: usize,
    pub d: usize,
    pub plain_bits: u32,
}

impl FqShares {
    const EMPTY: Self = Self { values: std::ptr::null_mut(), tokens: 0, d: 0, plain_bits: 0 };

    fn from_shares(s: Shares) -> Self {
        let Shares { tokens, d, plain_bits, values } = s;
        let b = values.into_boxed_slice();
        Self { values: Box::into_raw(b).cast(), tokens, d, plain_bits }
    }
}

/// Frees bytes the library returned and empties `bytes`; a null pointer or empty bytes are
/// left alone.
///
/// # Safety
/// `bytes` is null or points to an [`FqBytes`] the library filled (or zeroed), not freed since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_bytes_free(bytes: *mut FqBytes) {
    // SAFETY: the caller's contract.
    let Some(b) = (unsafe { bytes.as_mut() }) else { return };
    if !b.data.is_null() {
        // SAFETY: `data` and `len` came from `Box<[u8]>::into_raw` in `FqBytes::from_vec`.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(b.data, b.len)) });
    }
    *b = FqBytes::EMPTY;
}

/// Zeroes and frees shares the library returned and empties `shares`; a null pointer or
/// empty shares are left alone.
///
/// # Safety
/// `shares` is null or points to an [`FqShares`] the library filled (or zeroed), not freed
/// since.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_shares_free(shares: *mut FqShares) {
    // SAFETY: the caller's contract.
    let Some(s) = (unsafe { shares.as_mut() }) else { return };
    if !s.values.is_null() {
        let len = s.tokens * s.d;
        // SAFETY: `values` and `tokens * d` came from `Box<[u64]>::into_raw` in
        // `FqShares::from_shares`.
        let mut b = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(s.values, len)) };
        b.zeroize();
    }
    *s = FqShares::EMPTY;
}

/// The server party: a table preprocessed for one scheme, and its sessions.
pub struct FqServer {
    server: Box<dyn SchemeServer>,
    hello: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
}

impl std::fmt::Debug for FqServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FqServer").field("scheme", &self.server.name()).finish_non_exhaustive()
    }
}

/// The client party: its secret key and the design it derived from the server's hello.
pub struct FqClient {
    client: Box<dyn SchemeClient>,
    info: Info,
}

impl std::fmt::Debug for FqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FqClient").field("scheme", &self.info.scheme).finish_non_exhaustive()
    }
}

/// A C string argument.
///
/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::argument(format!("{what} is a null pointer")));
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| Failure::argument(format!("{what} is not UTF-8")))
}

/// A slice argument: `len` elements at `p` (which may be null only where `len` is 0).
///
/// # Safety
/// `p` is null or points to `len` readable elements.
unsafe fn slice<'a, T>(p: *const T, len: usize, what: &str) -> Result<&'a [T], Failure> {
    match (p.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(Failure::argument(format!("{what} is a null pointer with {len} elements"))),
        // SAFETY: the caller's contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(p, len) }),
    }
}

/// An output argument, or a mutable object of the library's.
///
/// # Safety
/// `p` is null or valid for writes (a live object, for the library's own).
unsafe fn out<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller's contract.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::argument(format!("{what} is a null pointer")))
}

/// An object argument.
///
/// # Safety
/// `p` is null or points to a live object of the library's.
unsafe fn object<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller's contract.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::argument(format!("{what} is a null pointer")))
}

/// Drops an object the library handed out (null: nothing to do); a panic in its drop stays
/// here.
///
/// # Safety
/// `p` is null or came from `Box::into_raw` in this library and is not used again.
unsafe fn free_object<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: the caller's contract.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(p) })));
    }
}

/// The server of `kind` over `table` on `backend` with its design inputs.
fn build<B: Backend>(
    backend: Arc<B>,
    kind: SchemeKind,
    table: &fastquery_table::IntTable,
    tokens: usize,
) -> Result<(Box<dyn SchemeServer>, DesignInputs), Failure> {
    // Refusals here are the caller's: a FASTQUERY_* setting, a table no design fits.
    let inputs = DesignInputs::for_backend(backend.as_ref(), table, kind.default_plain_bits(), tokens)
        .map_err(|e| Failure::of(e, FQ_ERR_ARGUMENT))?;
    let (server, _) = kind.build_for(backend, table, &inputs).map_err(|e| Failure::of(e, FQ_ERR_ARGUMENT))?;
    Ok((server, inputs))
}

/// Builds a server party: `table` (`rows x cols` floats, row-major: the embedding table)
/// encoded as `scheme` queries it (`"fastquery"`, `"fastquery-wan"`, `"fastquery-lan"`,
/// `"cheetah"`, `"iron"`, `"bumblebee"`) and preprocessed once on `backend` (`"cpu"`; `"cuda"`
/// where built with the feature `cuda`), for requests of at most `tokens` tokens; `threads`
/// bounds the CPU backend's workers (0: every core). On success `*server` owns it (free with
/// [`fq_server_free`]).
///
/// # Safety
/// `scheme` and `backend` are NUL-terminated strings, `table` points to `rows * cols` floats,
/// `server` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_server_new(
    scheme: *const c_char,
    backend: *const c_char,
    table: *const f32,
    rows: usize,
    cols: usize,
    tokens: usize,
    threads: usize,
    server: *mut *mut FqServer,
) -> i32 {
    call(|| {
        // SAFETY (this block's calls): the caller's contract.
        let (name, on, dst) =
            unsafe { (text(scheme, "scheme")?, text(backend, "backend")?, out(server, "server")?) };
        *dst = std::ptr::null_mut();
        let kind = SchemeKind::parse(name).map_err(|e| Failure::argument(e.to_string()))?;
        if tokens == 0 {
            return Err(Failure::argument("tokens must be at least 1"));
        }
        let len =
            rows.checked_mul(cols).ok_or_else(|| Failure::argument(format!("{rows} x {cols} overflows")))?;
        // SAFETY: the caller's contract.
        let data = unsafe { slice(table, len, "table")? };
        if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
            return Err(Failure::argument(format!("table entry {bad} is not finite")));
        }
        let real = Table::new(rows, cols, data.to_vec()).map_err(|e| Failure::argument(e.to_string()))?;
        let table = kind.table(&real).map_err(|e| Failure::argument(e.to_string()))?;
        drop(real);
        let (built, inputs) = match on {
            "cpu" => {
                let cpu = match threads {
                    0 => fastquery_cpu::CpuBackend::new(),
                    t => fastquery_cpu::CpuBackend::with_threads(t)
                        .map_err(|e| Failure(FQ_ERR_INTERNAL, e.to_string()))?,
                };
                build(Arc::new(cpu), kind, &table, tokens)?
            }
            #[cfg(feature = "cuda")]
            "cuda" => {
                let gpu = fastquery_cuda::CudaBackend::new(0)
                    .map_err(|e| Failure(FQ_ERR_INTERNAL, e.to_string()))?;
                build(Arc::new(gpu), kind, &table, tokens)?
            }
            other => {
                return Err(Failure::argument(format!(
                    "backend '{other}': this build has {}",
                    if cfg!(feature = "cuda") {
                        "cpu and cuda"
                    } else {
                        "cpu (cuda with the feature `cuda`)"
                    }
                )));
            }
        };
        let hello = Info::new(kind.id(), &inputs, tokens, u32::MAX as usize)
            .map_err(|e| Failure::argument(e.to_string()))?
            .encode();
        let scale = table.scale().to_vec();
        let zero = table.zero().to_vec();
        *dst = Box::into_raw(Box::new(FqServer { server: built, hello, scale, zero }));
        Ok(())
    })
}

/// Frees a server (every session with it); null is left alone.
///
/// # Safety
/// `server` is null or came from [`fq_server_new`] and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_server_free(server: *mut FqServer) {
    // SAFETY: the caller's contract.
    unsafe { free_object(server) }
}

/// The server's hello for the client party: the scheme and the public inputs of its design
/// (the table's shape and code width, the share ring, the tokens per request, ...), the bytes
/// `fastquery serve` sends as its `Info`.
///
/// # Safety
/// `server` is a live server, `hello` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_server_hello(server: *const FqServer, hello: *mut FqBytes) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let (s, dst) = unsafe { (object(server, "server")?, out(hello, "hello")?) };
        *dst = FqBytes::from_vec(s.hello.clone());
        Ok(())
    })
}

/// The table's public dequantization: `scale[c]` and `zero[c]` for each of its `d` channels
/// (`d` the table's columns), with `real ~ scale[c] (Q - zero[c])` for the rows `Q` the
/// shares add up to (as signed values mod `2^plain_bits`).
///
/// # Safety
/// `server` is a live server; `scale` and `zero` point to `d` writable elements each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_server_scales(
    server: *const FqServer,
    scale: *mut f32,
    zero: *mut i32,
    d: usize,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let s = unsafe { object(server, "server")? };
        if d != s.scale.len() {
            return Err(Failure::argument(format!("d = {d}, the table has {} channels", s.scale.len())));
        }
        if scale.is_null() || zero.is_null() {
            return Err(Failure::argument("scale or zero is a null pointer"));
        }
        // SAFETY: the caller's contract: `d` elements each.
        unsafe {
            std::ptr::copy_nonoverlapping(s.scale.as_ptr(), scale, d);
            std::ptr::copy_nonoverlapping(s.zero.as_ptr(), zero, d);
        }
        Ok(())
    })
}

/// Opens a session from a client's setup ([`fq_client_setup`]: its public keys) and writes
/// its id to `*session`.
///
/// # Safety
/// `server` is a live server, `setup` points to `len` bytes, `session` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_server_open_session(
    server: *const FqServer,
    setup: *const u8,
    len: usize,
    session: *mut u64,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let (s, bytes, dst) =
            unsafe { (object(server, "server")?, slice(setup, len, "setup")?, out(session, "session")?) };
        *dst = s.server.open_session(bytes).map_err(|e| Failure::of(e, FQ_ERR_PROTOCOL))?;
        Ok(())
    })
}

/// Closes a session (its keys dropped); an unknown id is left alone.
///
/// # Safety
/// `server` is null or a live server.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_server_close_session(server: *const FqServer, session: u64) {
    // SAFETY: the caller's contract.
    if let Some(s) = unsafe { server.as_ref() } {
        let _ = catch_unwind(AssertUnwindSafe(|| s.server.close_session(session)));
    }
}

/// Answers a client's query ([`fq_client_query`]) on `session`: the response for the client
/// party into `*response`, the server party's shares into `*shares` (free both).
///
/// # Safety
/// `server` is a live server, `query` points to `len` bytes, `response` and `shares` are valid
/// for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_server_answer(
    server: *const FqServer,
    session: u64,
    query: *const u8,
    len: usize,
    response: *mut FqBytes,
    shares: *mut FqShares,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let (s, bytes, r, sh) = unsafe {
            (
                object(server, "server")?,
                slice(query, len, "query")?,
                out(response, "response")?,
                out(shares, "shares")?,
            )
        };
        (*r, *sh) = (FqBytes::EMPTY, FqShares::EMPTY);
        let (bytes_back, mine) =
            s.server.answer(session, bytes).map_err(|e| Failure::of(e, FQ_ERR_PROTOCOL))?;
        (*r, *sh) = (FqBytes::from_vec(bytes_back), FqShares::from_shares(mine));
        Ok(())
    })
}

/// Builds a client party from a server's hello ([`fq_server_hello`]): it derives the same
/// design from the public inputs and draws its secret key. On success `*client` owns it (free
/// with [`fq_client_free`]).
///
/// # Safety
/// `hello` points to `len` bytes, `client` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_client_new(hello: *const u8, len: usize, client: *mut *mut FqClient) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let (bytes, dst) = unsafe { (slice(hello, len, "hello")?, out(client, "client")?) };
        *dst = std::ptr::null_mut();
        let info = Info::decode(bytes).map_err(Failure::protocol)?;
        let kind = SchemeKind::from_id(info.scheme)
            .ok_or_else(|| Failure::protocol(format!("unknown scheme id {}", info.scheme)))?;
        let c = kind.client(&info.inputs()).map_err(|e| Failure::of(e, FQ_ERR_PROTOCOL))?;
        *dst = Box::into_raw(Box::new(FqClient { client: c, info }));
        Ok(())
    })
}

/// Frees a client (its secret key zeroed by its own drop); null is left alone.
///
/// # Safety
/// `client` is null or came from [`fq_client_new`] and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_client_free(client: *mut FqClient) {
    // SAFETY: the caller's contract.
    unsafe { free_object(client) }
}

/// The shape of what the client's queries return: the table's rows `m` and channels `d`, the
/// share ring's bits, and the most tokens one query may carry. Any pointer may be null.
///
/// # Safety
/// `client` is a live client; each output pointer is null or valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_client_shape(
    client: *const FqClient,
    m: *mut usize,
    d: *mut usize,
    plain_bits: *mut u32,
    max_tokens: *mut usize,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let c = unsafe { object(client, "client")? };
        let i = &c.info;
        /// Writes `v` where `p` is not null.
        ///
        /// # Safety
        /// `p` is null or valid for writes.
        unsafe fn put<T>(p: *mut T, v: T) {
            // SAFETY: the caller's contract.
            if let Some(slot) = unsafe { p.as_mut() } {
                *slot = v;
            }
        }
        // SAFETY: the caller's contract: each is null or writable.
        unsafe {
            put(m, i.m as usize);
            put(d, i.d as usize);
            put(plain_bits, i.plain_bits);
            put(max_tokens, i.max_tokens as usize);
        }
        Ok(())
    })
}

/// The client's setup for the server's [`fq_server_open_session`]: its public keys, once per
/// session.
///
/// # Safety
/// `client` is a live client, `setup` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_client_setup(client: *mut FqClient, setup: *mut FqBytes) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let (c, dst) = unsafe { (out(client, "client")?, out(setup, "setup")?) };
        *dst = FqBytes::EMPTY;
        *dst = FqBytes::from_vec(c.client.setup().map_err(|e| Failure::of(e, FQ_ERR_PROTOCOL))?);
        Ok(())
    })
}

/// A query for the rows `ids[0..count]` (each below the table's rows; 1 to the hello's most
/// tokens): the bytes for the server's [`fq_server_answer`]. The ids never leave the client.
///
/// # Safety
/// `client` is a live client, `ids` points to `count` ids, `query` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_client_query(
    client: *mut FqClient,
    ids: *const u32,
    count: usize,
    query: *mut FqBytes,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let (c, ids, dst) =
            unsafe { (out(client, "client")?, slice(ids, count, "ids")?, out(query, "query")?) };
        *dst = FqBytes::EMPTY;
        if !(1..=c.info.max_tokens as usize).contains(&count) {
            return Err(Failure::argument(format!(
                "{count} tokens: a query carries 1 to {}",
                c.info.max_tokens
            )));
        }
        let ids: Vec<usize> = ids.iter().map(|&k| k as usize).collect();
        *dst = FqBytes::from_vec(c.client.query(&ids).map_err(|e| Failure::of(e, FQ_ERR_PROTOCOL))?);
        Ok(())
    })
}

/// Decodes the server's response to the client's last query into the client party's shares.
///
/// # Safety
/// `client` is a live client, `response` points to `len` bytes, `shares` is valid for writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fq_client_decode(
    client: *mut FqClient,
    response: *const u8,
    len: usize,
    shares: *mut FqShares,
) -> i32 {
    call(|| {
        // SAFETY: the caller's contract.
        let (c, bytes, dst) =
            unsafe { (out(client, "client")?, slice(response, len, "response")?, out(shares, "shares")?) };
        *dst = FqShares::EMPTY;
        *dst = FqShares::from_shares(c.client.decode(bytes).map_err(|e| Failure::of(e, FQ_ERR_PROTOCOL))?);
        Ok(())
    })
}
