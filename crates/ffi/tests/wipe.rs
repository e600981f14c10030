//! Shares are secret: `fq_shares_free` zeroes them before their memory goes back to the
//! allocator. This test binary's allocator looks at the one block it is told to watch when
//! that block is freed (its own binary: a global allocator is per binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};

use fastquery_ffi::*;

/// The address of the block to inspect when it is freed (0: none).
static WATCHED: AtomicUsize = AtomicUsize::new(0);
/// What the watched block held when freed: 0 not freed yet, 1 zeros only, 2 anything else.
static SEEN: AtomicU8 = AtomicU8::new(0);

struct Watch;

// SAFETY: every call is forwarded to the system allocator unchanged; `dealloc` only reads the
// block it is about to free.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if p as usize == WATCHED.load(SeqCst) {
            // SAFETY: `p` is a live block of `layout.size()` bytes until freed below.
            let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
            SEEN.store(if bytes.iter().all(|&b| b == 0) { 1 } else { 2 }, SeqCst);
            WATCHED.store(0, SeqCst);
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(p, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watch = Watch;

/// Frees `shares` while watching their block; returns what the block held when freed.
fn free_watched(shares: &mut FqShares) -> u8 {
    SEEN.store(0, SeqCst);
    WATCHED.store(shares.values as usize, SeqCst);
    // SAFETY: shares the library filled.
    unsafe { fq_shares_free(shares) };
    WATCHED.store(0, SeqCst);
    SEEN.load(SeqCst)
}

/// Both parties' shares of a real answer (random-looking, so not zero before) are zeros when
/// their memory is freed.
#[test]
fn freed_shares_are_zeroed() {
    let table: Vec<f32> = (0..64 * 8).map(|i| ((i * 37 % 101) as f32 - 50.0) / 1000.0).collect();
    let mut server = ptr::null_mut();
    let bytes = || FqBytes { data: ptr::null_mut(), len: 0 };
    let shares = || FqShares { values: ptr::null_mut(), tokens: 0, d: 0, plain_bits: 0 };
    let (mut hello, mut setup, mut query, mut response) = (bytes(), bytes(), bytes(), bytes());
    let (mut theirs, mut mine) = (shares(), shares());
    let (mut client, mut session) = (ptr::null_mut(), 0u64);
    // SAFETY: valid strings, `64 * 8` floats, live objects, writable outputs.
    unsafe {
        let rcs = [
            fq_server_new(c"cheetah".as_ptr(), c"cpu".as_ptr(), table.as_ptr(), 64, 8, 2, 1, &mut server),
            fq_server_hello(server, &mut hello),
            fq_client_new(hello.data, hello.len, &mut client),
            fq_client_setup(client, &mut setup),
            fq_server_open_session(server, setup.data, setup.len, &mut session),
            fq_client_query(client, [3u32, 60].as_ptr(), 2, &mut query),
            fq_server_answer(server, session, query.data, query.len, &mut response, &mut theirs),
            fq_client_decode(client, response.data, response.len, &mut mine),
        ];
        assert_eq!(rcs, [FQ_OK; 8]);
    }
    for shares in [&mut theirs, &mut mine] {
        // SAFETY: filled by the library: `tokens * d` values.
        let values = unsafe { std::slice::from_raw_parts(shares.values, shares.tokens * shares.d) };
        assert_eq!(values.len(), 16);
        assert!(values.iter().any(|&v| v != 0), "shares to watch");
        assert_eq!(free_watched(shares), 1, "the freed block held its shares still");
        assert!(shares.values.is_null());
    }
    // SAFETY: filled by the library, not freed yet.
    unsafe {
        for b in [&mut hello, &mut setup, &mut query, &mut response] {
            fq_bytes_free(b);
        }
        fq_client_free(client);
        fq_server_free(server);
    }
}
