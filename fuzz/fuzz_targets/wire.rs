//! Everything a server decodes from a client, on arbitrary bytes: frames, the handshake, and a
//! scheme's setup and query messages (on a tiny cheetah server with one valid session). Any
//! panic is a bug; errors are the expected outcome.
#![no_main]

use std::sync::{Arc, OnceLock};

use fastquery_net::frame::{Frame, Hello, Info, decode_query, decode_response};
use fastquery_protocol::{SchemeServer, harness::SchemeKind};
use libfuzzer_sys::fuzz_target;

fn server() -> &'static (Box<dyn SchemeServer>, u64) {
    static S: OnceLock<(Box<dyn SchemeServer>, u64)> = OnceLock::new();
    S.get_or_init(|| {
        let table = fastquery_table::IntTable::fixed_point(&fastquery_table::Workload::Tiny.synthetic(1), 12, 16)
            .expect("tiny table");
        let backend = Arc::new(fastquery_cpu::CpuBackend::new());
        let (server, mut client) = SchemeKind::Cheetah.build(backend, &table, 37, 1).expect("server");
        let session = server.open_session(&client.setup().expect("keys")).expect("session");
        (server, session)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = Frame::from_bytes(data, 1 << 20);
    let _ = Hello::decode(data);
    let _ = Info::decode(data);
    let _ = decode_query(data);
    let _ = decode_response(data);
    let (s, session) = server();
    if let Some((&first, rest)) = data.split_first() {
        if first & 1 == 0 {
            let _ = s.open_session(rest);
        } else {
            let _ = s.answer(*session, rest);
        }
    }
});
