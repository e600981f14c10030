//! The C interface driven as a C caller drives it: every scheme end to end on random tables
//! (the shares add up to the scheme's own encoding of the rows, exactly), every bad argument
//! and every hostile message refused with a code and a text while the server keeps serving,
//! and `examples/query.c` compiled against the header and the built library, then run.

use std::ffi::{CStr, CString};
use std::ptr;

use fastquery_ffi::*;
use fastquery_protocol::harness::SchemeKind;
use fastquery_table::Table;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn last_error() -> String {
    // SAFETY: fq_last_error returns a NUL-terminated string valid until the next call.
    unsafe { CStr::from_ptr(fq_last_error()) }.to_string_lossy().into_owned()
}

/// `rc` is `code` and the call left a text (or none, for success).
#[track_caller]
fn expect(rc: i32, code: i32) {
    let text = last_error();
    assert_eq!(rc, code, "code {rc} ({text})");
    assert_eq!(text.is_empty(), code == FQ_OK, "text '{text}' after code {rc}");
}

/// A Gaussian table of embedding-like scale.
fn real_table(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| {
            let (u1, u2) = (1.0 - rng.random::<f64>(), rng.random::<f64>());
            (0.02 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

fn bytes_of(b: &FqBytes) -> &[u8] {
    // SAFETY: the library filled `b` with `len` bytes at `data`.
    unsafe { std::slice::from_raw_parts(b.data, b.len) }
}

fn values_of(s: &FqShares) -> &[u64] {
    // SAFETY: the library filled `s` with `tokens * d` values.
    unsafe { std::slice::from_raw_parts(s.values, s.tokens * s.d) }
}

fn empty_bytes() -> FqBytes {
    FqBytes { data: ptr::null_mut(), len: 0 }
}

fn empty_shares() -> FqShares {
    FqShares { values: ptr::null_mut(), tokens: 0, d: 0, plain_bits: 0 }
}

/// A server, its client and an open session over a random table.
struct Parties {
    server: *mut FqServer,
    client: *mut FqClient,
    session: u64,
    real: Table,
    kind: SchemeKind,
    /// Whether dropping these parties frees the server too.
    owns_server: bool,
}

impl Parties {
    fn new(kind: SchemeKind, rows: usize, cols: usize, tokens: usize, seed: u64) -> Self {
        let data = real_table(rows, cols, seed);
        let (scheme, cpu) = (CString::new(kind.name()).unwrap(), c"cpu");
        let mut server = ptr::null_mut();
        // SAFETY: valid strings, `rows * cols` floats, a writable output.
        let rc = unsafe {
            fq_server_new(scheme.as_ptr(), cpu.as_ptr(), data.as_ptr(), rows, cols, tokens, 2, &mut server)
        };
        expect(rc, FQ_OK);
        Self::join(server, kind, Table::new(rows, cols, data).unwrap(), true)
    }

    /// A new client of `server` (over `real`, encoded as `kind` encodes it) with a session open
    /// there, from the server's hello alone.
    fn join(server: *mut FqServer, kind: SchemeKind, real: Table, owns_server: bool) -> Self {
        let mut hello = empty_bytes();
        // SAFETY (this function's calls): a live server, valid lengths, writable outputs.
        expect(unsafe { fq_server_hello(server, &mut hello) }, FQ_OK);
        let mut client = ptr::null_mut();
        expect(unsafe { fq_client_new(hello.data, hello.len, &mut client) }, FQ_OK);
        unsafe { fq_bytes_free(&mut hello) };
        let mut setup = empty_bytes();
        expect(unsafe { fq_client_setup(client, &mut setup) }, FQ_OK);
        let mut session = u64::MAX;
        expect(unsafe { fq_server_open_session(server, setup.data, setup.len, &mut session) }, FQ_OK);
        unsafe { fq_bytes_free(&mut setup) };
        Self { server, client, session, real, kind, owns_server }
    }

    /// Answers the client's pending `query` for the rows `ids` on the session, decodes it, and
    /// checks that the shares add up to the rows as the scheme encodes them, and that the
    /// public dequantization is the encoding's.
    fn answer_and_check(&self, query: &[u8], ids: &[u32]) {
        let (mut response, mut theirs, mut mine) = (empty_bytes(), empty_shares(), empty_shares());
        // SAFETY (this function's calls): live objects, valid lengths, writable outputs.
        let rc = unsafe {
            fq_server_answer(
                self.server,
                self.session,
                query.as_ptr(),
                query.len(),
                &mut response,
                &mut theirs,
            )
        };
        expect(rc, FQ_OK);
        expect(unsafe { fq_client_decode(self.client, response.data, response.len, &mut mine) }, FQ_OK);
        let d = self.real.d();
        assert_eq!((mine.tokens, mine.d, theirs.tokens, theirs.d), (ids.len(), d, ids.len(), d));
        assert_eq!(mine.plain_bits, theirs.plain_bits);
        let l = mine.plain_bits;
        let mask = if l == 64 { u64::MAX } else { (1u64 << l) - 1 };
        let table = self.kind.table(&self.real).unwrap();
        for (t, &k) in ids.iter().enumerate() {
            let got: Vec<u64> = values_of(&mine)[t * d..][..d]
                .iter()
                .zip(&values_of(&theirs)[t * d..][..d])
                .map(|(a, b)| a.wrapping_add(*b) & mask)
                .collect();
            let want: Vec<u64> = table.row(k as usize).iter().map(|&q| i64::from(q) as u64 & mask).collect();
            assert_eq!(got, want, "{}: row {k}", self.kind.name());
        }
        let (mut scale, mut zero) = (vec![0f32; d], vec![0i32; d]);
        expect(unsafe { fq_server_scales(self.server, scale.as_mut_ptr(), zero.as_mut_ptr(), d) }, FQ_OK);
        assert_eq!((&scale[..], &zero[..]), (table.scale(), table.zero()));
        unsafe {
            fq_bytes_free(&mut response);
            fq_shares_free(&mut mine);
            fq_shares_free(&mut theirs);
        }
        assert!(mine.values.is_null() && theirs.values.is_null() && response.data.is_null());
    }

    /// Queries `ids` and checks the answer ([`Parties::answer_and_check`]).
    fn query_and_check(&self, ids: &[u32]) {
        let mut query = empty_bytes();
        // SAFETY: a live client, `ids.len()` ids, a writable output.
        expect(unsafe { fq_client_query(self.client, ids.as_ptr(), ids.len(), &mut query) }, FQ_OK);
        self.answer_and_check(bytes_of(&query), ids);
        // SAFETY: filled by the library.
        unsafe { fq_bytes_free(&mut query) };
    }
}

impl Drop for Parties {
    fn drop(&mut self) {
        // SAFETY: live objects, not used again.
        unsafe {
            fq_server_close_session(self.server, self.session);
            fq_client_free(self.client);
            if self.owns_server {
                fq_server_free(self.server);
            }
        }
    }
}

/// Every scheme through the C functions, a one-token query and a full one of random ids: the
/// two parties' shares add up to the rows as the scheme encodes them, word for word.
#[test]
fn every_scheme_answers_through_the_c_interface() {
    let mut rng = StdRng::seed_from_u64(7);
    for (i, kind) in SchemeKind::ALL.into_iter().enumerate() {
        let (rows, cols, tokens) = (rng.random_range(100..400), rng.random_range(8..48), 3);
        let p = Parties::new(kind, rows, cols, tokens, 100 + i as u64);
        let mut shape = (0usize, 0usize, 0u32, 0usize);
        // SAFETY: a live client, writable outputs.
        let rc = unsafe { fq_client_shape(p.client, &mut shape.0, &mut shape.1, &mut shape.2, &mut shape.3) };
        expect(rc, FQ_OK);
        assert_eq!(shape, (rows, cols, kind.default_plain_bits(), tokens));
        p.query_and_check(&[rng.random_range(0..rows as u32)]);
        let ids: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..rows as u32)).collect();
        p.query_and_check(&ids);
    }
}

/// Null pointers, impossible shapes, unknown names and hostile bytes get an error code and a
/// text, never a crash; the server and the client go on serving the good session afterwards,
/// and a success clears the text.
#[test]
fn bad_input_is_refused_and_the_parties_keep_working() {
    let p = Parties::new(SchemeKind::FastQuery, 128, 16, 2, 3);
    let data = real_table(8, 4, 1);
    let mut server = ptr::null_mut();
    let (fq, cpu) = (c"fastquery", c"cpu");
    // SAFETY (this test's calls): every pointer is null, valid, or points to as many elements
    // as its length says; the library must check the rest.
    unsafe {
        expect(
            fq_server_new(ptr::null(), cpu.as_ptr(), data.as_ptr(), 8, 4, 1, 0, &mut server),
            FQ_ERR_ARGUMENT,
        );
        expect(
            fq_server_new(c"gpt".as_ptr(), cpu.as_ptr(), data.as_ptr(), 8, 4, 1, 0, &mut server),
            FQ_ERR_ARGUMENT,
        );
        expect(
            fq_server_new(fq.as_ptr(), c"tpu".as_ptr(), data.as_ptr(), 8, 4, 1, 0, &mut server),
            FQ_ERR_ARGUMENT,
        );
        expect(
            fq_server_new(fq.as_ptr(), cpu.as_ptr(), ptr::null(), 8, 4, 1, 0, &mut server),
            FQ_ERR_ARGUMENT,
        );
        expect(
            fq_server_new(fq.as_ptr(), cpu.as_ptr(), data.as_ptr(), 8, 4, 0, 0, &mut server),
            FQ_ERR_ARGUMENT,
        );
        expect(
            fq_server_new(fq.as_ptr(), cpu.as_ptr(), data.as_ptr(), usize::MAX, 4, 1, 0, &mut server),
            FQ_ERR_ARGUMENT,
        );
        expect(
            fq_server_new(fq.as_ptr(), cpu.as_ptr(), data.as_ptr(), 8, 4, 1, 0, ptr::null_mut()),
            FQ_ERR_ARGUMENT,
        );
        let mut nan = data.clone();
        nan[5] = f32::NAN;
        expect(
            fq_server_new(fq.as_ptr(), cpu.as_ptr(), nan.as_ptr(), 8, 4, 1, 0, &mut server),
            FQ_ERR_ARGUMENT,
        );
        assert!(server.is_null(), "no server after a refusal");

        // The client's side: hellos that are not a server's.
        let mut client = ptr::null_mut();
        let mut hello = empty_bytes();
        expect(fq_server_hello(p.server, &mut hello), FQ_OK);
        let good = bytes_of(&hello).to_vec();
        fq_bytes_free(&mut hello);
        fq_bytes_free(&mut hello); // emptied: a second free is a no-op
        fq_bytes_free(ptr::null_mut());
        fq_shares_free(ptr::null_mut());
        expect(fq_client_new(good.as_ptr(), good.len() - 1, &mut client), FQ_ERR_PROTOCOL);
        let mut foreign = good.clone();
        foreign[0] = 200; // no such scheme
        expect(fq_client_new(foreign.as_ptr(), foreign.len(), &mut client), FQ_ERR_PROTOCOL);
        let mut rng = StdRng::seed_from_u64(11);
        for len in [0usize, 1, 7, 53, 200] {
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            expect(fq_client_new(junk.as_ptr(), junk.len(), &mut client), FQ_ERR_PROTOCOL);
        }
        expect(fq_client_new(ptr::null(), 5, &mut client), FQ_ERR_ARGUMENT);
        assert!(client.is_null());

        // Queries the client refuses to make.
        let mut query = empty_bytes();
        expect(fq_client_query(p.client, [1u32, 2, 3].as_ptr(), 3, &mut query), FQ_ERR_ARGUMENT);
        expect(fq_client_query(p.client, [1u32].as_ptr(), 0, &mut query), FQ_ERR_ARGUMENT);
        expect(fq_client_query(p.client, [128u32].as_ptr(), 1, &mut query), FQ_ERR_PROTOCOL);
        expect(fq_client_query(ptr::null_mut(), [1u32].as_ptr(), 1, &mut query), FQ_ERR_ARGUMENT);
        assert!(query.data.is_null());

        // Messages the server refuses: unknown sessions, junk, a truncated query, junk keys.
        expect(fq_client_query(p.client, [5u32].as_ptr(), 1, &mut query), FQ_OK);
        let q = bytes_of(&query).to_vec();
        let (mut response, mut shares) = (empty_bytes(), empty_shares());
        expect(
            fq_server_answer(p.server, p.session + 1000, q.as_ptr(), q.len(), &mut response, &mut shares),
            FQ_ERR_PROTOCOL,
        );
        expect(
            fq_server_answer(p.server, p.session, q.as_ptr(), q.len() / 2, &mut response, &mut shares),
            FQ_ERR_PROTOCOL,
        );
        for len in [0usize, 3, 64, 4096] {
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            expect(
                fq_server_answer(p.server, p.session, junk.as_ptr(), junk.len(), &mut response, &mut shares),
                FQ_ERR_PROTOCOL,
            );
            let mut session = 0;
            expect(
                fq_server_open_session(p.server, junk.as_ptr(), junk.len(), &mut session),
                FQ_ERR_PROTOCOL,
            );
        }
        expect(
            fq_server_answer(p.server, p.session, q.as_ptr(), q.len(), &mut response, ptr::null_mut()),
            FQ_ERR_ARGUMENT,
        );
        assert!(response.data.is_null() && shares.values.is_null());
        let mut scale = [0f32; 4];
        let mut zero = [0i32; 4];
        expect(fq_server_scales(p.server, scale.as_mut_ptr(), zero.as_mut_ptr(), 4), FQ_ERR_ARGUMENT);
        // A client carries one query at a time: the next waits for this one's response.
        expect(fq_client_query(p.client, [6u32].as_ptr(), 1, &mut empty_bytes()), FQ_ERR_PROTOCOL);
        // The refused messages changed nothing: the query is answered and decodes.
        p.answer_and_check(&q, &[5]);
        fq_bytes_free(&mut query);

        // A response that is not the server's: the client refuses it and still decodes the
        // server's own response to its query afterwards.
        let junk: Vec<u8> = (0..300).map(|_| rng.random()).collect();
        let mut mine = empty_shares();
        expect(fq_client_query(p.client, [9u32].as_ptr(), 1, &mut query), FQ_OK);
        expect(fq_client_decode(p.client, junk.as_ptr(), junk.len(), &mut mine), FQ_ERR_PROTOCOL);
        expect(fq_client_decode(p.client, junk.as_ptr(), 0, &mut mine), FQ_ERR_PROTOCOL);
        assert!(mine.values.is_null());
        p.answer_and_check(bytes_of(&query), &[9]);
        fq_bytes_free(&mut query);
        fq_server_close_session(p.server, p.session + 1000); // unknown: left alone
        fq_server_close_session(ptr::null(), 0);
        fq_server_free(ptr::null_mut());
        fq_client_free(ptr::null_mut());
    }
    // Both parties still serve the session, and a success clears the text.
    p.query_and_check(&[17, 100]);
    p.query_and_check(&[127]);
}

/// One server, several threads answering their own sessions at once (a server is `Sync`).
#[test]
fn a_server_answers_sessions_on_several_threads() {
    let first = Parties::new(SchemeKind::Cheetah, 200, 12, 2, 21);
    let server = first.server as usize;
    std::thread::scope(|scope| {
        for t in 0..3u32 {
            scope.spawn(move || {
                // The server outlives the scope; each thread has its own client and session.
                let real = Table::new(200, 12, real_table(200, 12, 21)).unwrap();
                let p = Parties::join(server as *mut FqServer, SchemeKind::Cheetah, real, false);
                p.query_and_check(&[t * 50, t * 50 + 7]);
            });
        }
    });
    first.query_and_check(&[199, 0]);
}

/// The first of `$<var>` and `names` that runs.
fn compiler(var: &str, names: [&str; 3]) -> Option<String> {
    let candidates = std::env::var(var).into_iter().chain(names.map(String::from));
    candidates
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// `examples/query.c` compiled against `include/fastquery.h` and the shared library cargo built
/// beside this test (warnings are errors), then run for a folded and a blocked scheme: the
/// shares add up, dequantized, to the table's rows. The header and the example also compile as
/// C++ (the C++ compiler `scripts/setup.sh` installs for the CUDA emulator).
#[test]
fn the_c_example_compiles_and_its_shares_add_up() {
    // rustc links with `cc` on Linux: a machine that builds this crate has a C compiler.
    let cc = compiler("CC", ["cc", "gcc", "clang"]).expect("a C compiler (cc, gcc or clang, or $CC)");
    let cxx =
        compiler("CXX", ["c++", "g++", "clang++"]).expect("a C++ compiler (scripts/setup.sh installs g++)");
    let crate_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // This test runs from <target>/<profile>/deps, where `cargo test` leaves the shared library
    // it built with it (`cargo build` copies it up to <profile>).
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let lib =
        ["libfastquery_ffi.so", "libfastquery_ffi.dylib"].iter().map(|f| deps.join(f)).find(|p| p.exists());
    let lib = lib.unwrap_or_else(|| panic!("no libfastquery_ffi in {}", deps.display()));
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fastquery_query_c");
    let status = std::process::Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples/query.c"))
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", deps.display()))
        .args(["-lm", "-o"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "{cc} failed on examples/query.c");
    let status = std::process::Command::new(&cxx)
        .args(["-x", "c++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-I"])
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("examples/query.c"))
        .status()
        .unwrap();
    assert!(status.success(), "{cxx} failed on examples/query.c as C++");
    for scheme in ["fastquery", "cheetah"] {
        let run = std::process::Command::new(&out).arg(scheme).output().unwrap();
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{scheme}: {text} {}", String::from_utf8_lossy(&run.stderr));
        assert!(text.starts_with(&format!("{scheme}: 3 tokens")), "{text}");
    }
}
