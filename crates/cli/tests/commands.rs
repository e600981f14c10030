//! The README's commands, run as a user would: the main job (its two halves), and the errors a
//! user sees for a backend that is not there or a flag that is wrong.

use std::process::{Command, Output};

fn fastquery(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastquery")).args(args).output().expect("binary runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `args` with `--json path`, checks that it succeeded, and returns the JSON it wrote.
fn json_of(args: &[&str], path: &std::path::Path) -> serde_json::Value {
    let o = fastquery(&[args, &["--json", path.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Each command line fails with exit code 2 (an error with a message), none with a panic.
fn refused(commands: &[&[&str]]) {
    for args in commands {
        let o = fastquery(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{args:?}");
    }
}

#[test]
fn check_passes_every_check_on_the_cpu() {
    let o = fastquery(&["check"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("26 passed, 0 failed"), "{t}");
    assert!(!t.contains("FAIL"), "{t}");
}

#[test]
fn check_replays_a_given_seed() {
    let a = text(&fastquery(&["check", "--seed", "42"]));
    assert!(a.contains("seed 42"), "{a}");
    assert!(a.contains("26 passed, 0 failed"), "{a}");
}

#[test]
fn check_with_one_thread() {
    let o = fastquery(&["--threads", "1", "check"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 threads"));
}

#[test]
fn kernels_prints_the_summary_with_ratios() {
    let o = fastquery(&["kernels", "--quick"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for n in ["2048", "4096", "8192", "16384"] {
        assert!(t.lines().any(|l| l.trim_start().starts_with(n)), "row for N = {n} missing:\n{t}");
    }
    assert!(t.contains("speed-up") && t.contains("G coefficient products/s"), "{t}");
    // The multiply-accumulate kernels side by side (the portable one on every machine), on the
    // folded product's shape too.
    assert!(t.contains("Portable") && t.contains("16x125x4 (N=8192, 5 limbs)"), "{t}");
}

#[test]
fn the_cpu_mac_kernel_switch_is_strict() {
    let run = |v: &str| {
        Command::new(env!("CARGO_BIN_EXE_fastquery"))
            .args(["check", "--seed", "7"])
            .env("FASTQUERY_CPU_MAC", v)
            .output()
            .expect("binary runs")
    };
    let o = run("portable");
    assert!(o.status.success() && text(&o).contains("26 passed, 0 failed"), "{}", text(&o));
    let o = run("avx1024");
    let t = text(&o);
    assert!(!o.status.success() && t.contains("FASTQUERY_CPU_MAC=avx1024: expected"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn absent_backends_and_bad_flags_are_clear_errors() {
    for b in ["cuda", "cuda-emulator", "wgpu"] {
        let o = fastquery(&["--backend", b, "check"]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let t = text(&o);
        assert!(t.contains(&format!("backend '{b}' is unavailable")) && t.contains("--backend cpu"), "{t}");
        assert!(!t.contains("panicked"), "{t}");
    }
    let o = fastquery(&["--backend", "tpu"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("unknown backend 'tpu'"));
    let o = fastquery(&["--threads", "0", "check"]);
    assert!(!o.status.success());
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
}

#[test]
fn demo_is_the_main_job_and_reconstructs() {
    for args in [&[][..], &["demo", "--tokens", "0,511,7"][..]] {
        let o = fastquery(args);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("shares reconstructed exactly"), "{t}");
        assert!(t.contains("query:") && t.contains("response:"), "{t}");
    }
    let o = fastquery(&["demo", "--tokens", "512"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("outside the demo table's vocabulary"), "{}", text(&o));
}

#[test]
fn bench_writes_a_verified_json_report() {
    let dir = std::env::temp_dir().join(format!("fq-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("r.json");
    let o = fastquery(&[
        "bench",
        "--workload",
        "tiny",
        "--schemes",
        "cheetah",
        "--tokens",
        "3",
        "--clients",
        "3",
        "--repeat",
        "2",
        "--warm-up",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cheetah: 3 clients x 1 tokens: one by one"), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["workload"], "tiny");
    assert_eq!(v["tokens"], 3);
    let s = &v["schemes"][0];
    assert_eq!(s["scheme"], "cheetah");
    assert_eq!(s["batching"]["clients"], 3);
    assert_eq!(s["batching"]["verified"], true);
    // Two repetitions: both runs' times, the reported one their median (here their mean).
    let runs: Vec<f64> =
        s["server_ms_per_token_runs"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    assert_eq!(runs.len(), 2, "the warm-up request is not among the measured runs");
    assert_eq!(s["warm_up_requests"], 1);
    assert!(text(&o).contains("1 time(s) unmeasured"), "{}", text(&o));
    let median = s["server_ms_per_token"].as_f64().unwrap();
    assert!((median - (runs[0] + runs[1]) / 2.0).abs() < 1e-6, "{runs:?} {median}");
    assert!(text(&o).contains("over 2 repetitions"), "{}", text(&o));
    let bad = fastquery(&["bench", "--workload", "tiny", "--repeat", "0"]);
    assert!(!bad.status.success() && text(&bad).contains("--repeat"), "{}", text(&bad));
    let bad = fastquery(&["bench", "--workload", "tiny", "--warm-up", "101"]);
    assert!(!bad.status.success() && text(&bad).contains("--warm-up"), "{}", text(&bad));
    // The memory-bound floor beside the measured time: a measured bandwidth, a positive floor.
    assert!(v["bandwidth_gbs"].as_f64().unwrap() > 0.1, "{v}");
    assert!(v["table_floor_ms_per_token"]["cheetah"].as_f64().unwrap() > 0.0, "{v}");
    assert!(text(&o).contains("table floor"), "{}", text(&o));
    assert_eq!(s["verified"], true);
    for key in [
        "upload_bytes_per_token",
        "download_bytes_per_token",
        "server_ms_per_token",
        "client_ms_per_token",
        "lan_ms_per_token",
        "wan_ms_per_token",
    ] {
        assert!(s[key].as_f64().unwrap() > 0.0, "{key}");
    }
    for key in ["setup_bytes", "preprocess_bytes"] {
        assert!(s[key].as_u64().unwrap() > 0, "{key}");
    }
    assert_eq!(s["params"]["n"], 4096);
    assert_eq!(s["params"]["t"], 37);
    // A cap on the responses sharing one c: the report names the inputs it ran on, and the
    // setup shrinks (tiny's design shares one c between two members, four keys; capped at one,
    // at most one key).
    let run = |name: &str, schemes: &str, flags: &[&str]| {
        let json = dir.join(format!("{name}.json"));
        let mut args = vec!["bench", "--workload", "tiny", "--schemes", schemes, "--tokens", "5"];
        args.extend(["--json", json.to_str().unwrap()]);
        args.extend(flags);
        let o = fastquery(&args);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (v, text(&o))
    };
    let (free, one) = (run("free", "fastquery", &[]).0, run("cap1", "fastquery", &["--max-shared", "1"]).0);
    let (free, one) = (&free["schemes"][0], &one["schemes"][0]);
    assert_eq!(free["inputs"]["max_shared"], 16);
    assert_eq!(free["inputs"]["session_tokens"], serde_json::Value::Null);
    assert_eq!(one["inputs"]["max_shared"], 1);
    assert_eq!(one["verified"], true);
    assert!(one["setup_bytes"].as_u64() < free["setup_bytes"].as_u64(), "{one} {free}");
    // A declared session of one request: the inputs name it, the design's setup is no larger,
    // and the report adds each scheme's bytes over the session and fastquery's ratio of them,
    // computed from the report's own numbers.
    let (v, out) = run("session", "fastquery,bumblebee", &["--session-tokens", "5"]);
    let (fq, bb) = (&v["schemes"][0], &v["schemes"][1]);
    assert_eq!(fq["inputs"]["session_tokens"], 5);
    assert_eq!(fq["verified"], true);
    assert!(fq["setup_bytes"].as_u64() <= free["setup_bytes"].as_u64(), "{fq} {free}");
    let over = |r: &serde_json::Value| {
        let f = |k: &str| r[k].as_f64().unwrap();
        f("setup_bytes") + 5.0 * (f("upload_bytes_per_token") + f("download_bytes_per_token"))
    };
    let ratio = v["ratios"]["bumblebee"]["session_comm"].as_f64().unwrap();
    assert!((ratio - over(bb) / over(fq)).abs() < 1e-9 * ratio, "{ratio} {v}");
    assert!(
        out.contains("Over a session of 5 tokens") && out.contains("communication over 5 tokens"),
        "{out}"
    );
    assert!(
        run("nosession", "fastquery,bumblebee", &[]).0["ratios"]["bumblebee"].get("session_comm").is_none()
    );
    let _ = std::fs::remove_dir_all(&dir);
    // Bad flags are errors with a message, not panics.
    refused(&[
        &["bench", "--workload", "gpt9"][..],
        &["bench", "--schemes", "magic"][..],
        &["bench", "--tokens", "0"][..],
        &["bench", "--max-shared", "0"][..],
        &["bench", "--max-shared", "17"][..],
        &["serve", "--auth-token-file", "t", "--self-check", "101"][..],
        &["serve", "--auth-token-file", "t", "--self-check", "-1"][..],
        &["serve", "--auth-token-file", "t", "--max-shared", "0"][..],
        &["serve", "--auth-token-file", "t", "--max-shared", "17"][..],
        &["bench", "--session-tokens", "0"][..],
        &["bench", "--session-tokens", "4294967296"][..],
        &["serve", "--auth-token-file", "t", "--session-tokens", "0"][..],
        &["serve", "--auth-token-file", "t", "--session-tokens", "many"][..],
        &["bench", "--schemes", "fastquery", "--decode-tokens", "5"][..],
        &["bench", "--schemes", "fastquery", "--session-tokens", "8", "--decode-tokens", "9"][..],
    ]);
}

/// `plan` on the tiny table: one row per session length and one without end; a session of one
/// request takes a smaller setup than sessions without end; each row's bytes with the setup are
/// its bytes per token and its setup spread over the session; bad flags are errors.
#[test]
fn plan_shows_the_design_of_each_session_length() {
    let dir = std::env::temp_dir().join(format!("fq-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("plan.json");
    let args = ["plan", "--table", "tiny", "--tokens", "4", "--sessions", "4,100000", "--json"];
    let o = fastquery(&[&args[..], &[json.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("without end"), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let f = |i: usize, k: &str| rows[i][k].as_f64().unwrap();
    assert_eq!(rows[0]["session_tokens"], 4);
    assert_eq!(rows[2]["session_tokens"], serde_json::Value::Null);
    assert!(f(0, "setup_bytes") < f(2, "setup_bytes"), "{v}");
    for (i, session) in [(0, 4.0), (1, 100000.0)] {
        let spread = f(i, "bytes_per_token") + f(i, "setup_bytes") / session;
        assert!((f(i, "bytes_per_token_with_setup") - spread).abs() <= 1.0, "{v}");
    }
    assert_eq!(f(2, "bytes_per_token_with_setup"), f(2, "bytes_per_token"));
    // A request of one token (a decode step) costs no less than a full request's share per
    // token: the full one shares its query ciphertext and its c among its tokens.
    for i in 0..3 {
        assert!(f(i, "one_token_request") >= f(i, "bytes_per_token"), "{v}");
        // The same for the estimated server time: a full request shares its pass over the
        // table among its tokens.
        assert!(f(i, "est_server_ms_per_token") > 0.0, "{v}");
        assert!(f(i, "est_one_token_ms") >= f(i, "est_server_ms_per_token") * (1.0 - 1e-9), "{v}");
    }
    // Over a session of one request its design sends fewer bytes, setup included, than the
    // design of sessions without end would: its setup plus its bytes per token.
    assert!(f(0, "bytes_per_token_with_setup") < f(2, "bytes_per_token") + f(2, "setup_bytes") / 4.0);
    // The ratio to bumblebee over a session is what a bench of both over that session
    // measures (the predicted bytes are the wire's).
    let plan =
        json_of(&["plan", "--table", "tiny", "--tokens", "5", "--sessions", "5"], &dir.join("p5.json"));
    let bench = json_of(
        &[
            "bench",
            "--workload",
            "tiny",
            "--schemes",
            "fastquery,bumblebee",
            "--tokens",
            "5",
            "--session-tokens",
            "5",
        ],
        &dir.join("b5.json"),
    );
    // Half of a 64-token session in one-token requests: its bytes per token are the setup, the
    // full requests and the one-token requests over the session's tokens.
    let d = json_of(
        &["plan", "--table", "tiny", "--tokens", "4", "--sessions", "64", "--decode-percent", "50"],
        &dir.join("d.json"),
    );
    let g = |k: &str| d[0][k].as_f64().unwrap();
    assert_eq!(d[0]["decode_tokens"], 32);
    let over = g("setup_bytes") + 32.0 * g("bytes_per_token") + 32.0 * g("one_token_request");
    assert!((g("bytes_per_token_with_setup") - over / 64.0).abs() < 1e-6, "{d}");
    let planned = plan[0]["vs_bumblebee"].as_f64().unwrap();
    let measured = bench["ratios"]["bumblebee"]["session_comm"].as_f64().unwrap();
    assert!((planned - measured).abs() < 1e-6 * measured, "{planned} vs {measured}");
    let _ = std::fs::remove_dir_all(&dir);
    refused(&[
        &["plan", "--table", "tiny", "--scheme", "cheetah"][..],
        &["plan", "--table", "tiny", "--sessions", "0"][..],
        &["plan", "--table", "tiny", "--tokens", "0"][..],
        &["plan", "--table", "no-such-table"][..],
        &["plan", "--table", "tiny", "--max-shared", "17"][..],
        &["plan", "--table", "tiny", "--decode-percent", "101"][..],
    ]);
}

/// `session` sends whole sessions: each scheme's bytes by phase are its design's predictions,
/// the requests are the session's shape (one per token for cheetah), the ratios are the
/// reports' own, and fastquery's session sends exactly what `plan` predicts for it.
#[test]
fn session_runs_whole_sessions_as_planned() {
    let dir = std::env::temp_dir().join(format!("fq-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shape = ["--tokens", "4", "--session-tokens", "64", "--decode-tokens", "32"];
    let args = [&["session", "--schemes", "cheetah,fastquery", "--undeclared"][..], &shape[..]].concat();
    let v = json_of(&args, &dir.join("s.json"));
    let sessions = v["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{v}");
    let n = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    for s in sessions {
        assert_eq!(s["verified"], true, "{s}");
        let (p, d) = (&s["prompt"], &s["decode"]);
        let bytes = |p: &serde_json::Value| n(p, "query_bytes") + n(p, "response_bytes");
        assert_eq!(n(s, "total_bytes"), n(s, "setup_bytes") + bytes(p) + bytes(d), "{s}");
        assert_eq!(n(p, "predicted_bytes"), bytes(p), "{s}");
        assert_eq!(n(d, "predicted_bytes"), bytes(d), "{s}");
        assert_eq!((n(p, "tokens"), n(d, "tokens"), n(d, "requests")), (32, 32, 32), "{s}");
        // The prompt fills its requests: the search's model is the wire's bytes.
        assert_eq!(n(s, "model_bytes"), n(s, "total_bytes"), "{s}");
        // The server's phases, timed in the decode steps: one ran in all 32 of them.
        let phases = d["server_phases"].as_array().unwrap();
        assert!(phases.iter().any(|ph| ph["ms_each"].as_array().unwrap().len() == 32), "{s}");
    }
    let (cheetah, fq, free) = (&sessions[0], &sessions[1], &sessions[2]);
    assert_eq!((cheetah["scheme"].as_str(), fq["scheme"].as_str()), (Some("cheetah"), Some("fastquery")));
    assert_eq!((fq["declared"].as_bool(), free["declared"].as_bool()), (Some(true), Some(false)));
    assert_eq!((n(&cheetah["prompt"], "requests"), n(&fq["prompt"], "requests")), (32, 8));
    for (r, s) in v["ratios"].as_array().unwrap().iter().zip([cheetah, free]) {
        let want = n(s, "total_bytes") as f64 / n(fq, "total_bytes") as f64;
        assert!((r["bytes"].as_f64().unwrap() - want).abs() < 1e-9 * want, "{r} {s}");
    }
    // The plan of the same session predicts fastquery's bytes to the byte.
    let plan = json_of(
        &["plan", "--table", "tiny", "--tokens", "4", "--sessions", "64", "--decode-percent", "50"],
        &dir.join("p.json"),
    );
    let planned = plan[0]["bytes_per_token_with_setup"].as_f64().unwrap() * 64.0;
    assert!((planned - n(fq, "total_bytes") as f64).abs() < 1e-6 * planned, "{planned} vs {fq}");
    let md = std::fs::read_to_string(dir.join("s.md")).unwrap();
    assert!(md.contains("| fastquery (no session) |"), "{md}");
    assert!(md.contains("| server phases, median ms | per prompt request | per decode step |"), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
    refused(&[
        &["session", "--tokens", "4"][..],
        &["session", "--session-tokens", "3", "--decode-tokens", "4"][..],
        &["session", "--session-tokens", "100000"][..],
        &["session", "--session-tokens", "8", "--tokens", "0"][..],
        &["session", "--session-tokens", "8", "--schemes", "nope"][..],
        &["session", "--session-tokens", "8", "--workload", "nope"][..],
    ]);
}

#[test]
fn quantize_reports_and_rejects_bad_input() {
    let dir = std::env::temp_dir().join(format!("fq-quant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, out) = (dir.join("q.json"), dir.join("q.fqqt"));
    let o = fastquery(&[
        "quantize",
        "--table",
        "tiny",
        "--avg-bits",
        "3",
        "--json",
        json.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["avg_bits"], 3.0);
    let rel = v["rel_error"].as_f64().unwrap();
    assert!(rel > 0.0 && rel < v["uniform_rel_error"].as_f64().unwrap());
    let total: u64 = v["bits_histogram"].as_array().unwrap().iter().map(|h| h[1].as_u64().unwrap()).sum();
    assert_eq!(total, 64);
    assert!(std::fs::metadata(&out).unwrap().len() > 512 * 64);
    refused(&[
        &["quantize", "--avg-bits", "9"][..],
        &["quantize", "--table", "/no/such/file.gguf"][..],
        &["quantize", "--table", "nonsense"][..],
        // --eval needs a real model, not a synthetic table.
        &["quantize", "--table", "tiny", "--eval"][..],
    ]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn quantize_the_real_smollm2_workload() {
    // scripts/test.sh installs it; elsewhere the test says it was skipped.
    let Some(path) = std::env::var_os("FASTQUERY_SMOLLM2") else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: FASTQUERY_SMOLLM2 not set");
        return;
    };
    let cache = std::path::Path::new(&path).parent().unwrap().parent().unwrap();
    let json = std::env::temp_dir().join(format!("fq-smollm2-{}.json", std::process::id()));
    // Two budgets, evaluated on the first 192 tokens of the text (the full curve is a benchmark).
    let o = Command::new(env!("CARGO_BIN_EXE_fastquery"))
        .args(["quantize", "--table", "smollm2", "--avg-bits", "2,4", "--eval", "--eval-tokens", "192"])
        .args(["--json", json.to_str().unwrap()])
        .env("FASTQUERY_CACHE", cache)
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("smollm2 (49152 x 576, from file)"), "{t}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let orig = v["ppl_original"].as_f64().unwrap();
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for p in points {
        assert_eq!(p["ppl_original"].as_f64(), Some(orig));
        assert_eq!(p["eval_tokens"].as_u64(), Some(192));
        for key in ["ppl_quantized", "ppl_uniform"] {
            let q = p[key].as_f64().unwrap();
            assert!(q.is_finite() && q > 1.0, "{key} {q}");
        }
    }
    // Two bits on every channel is a real loss; four bits costs far less than two.
    let (p2, p4) =
        (points[0]["ppl_quantized"].as_f64().unwrap(), points[1]["ppl_quantized"].as_f64().unwrap());
    assert!(p2 > orig && p2 > p4, "original {orig}, 2 bits {p2}, 4 bits {p4}");
    let _ = std::fs::remove_file(&json);
}

#[test]
fn bench_compares_every_scheme_with_ratios_a_table_and_a_chart() {
    let dir = std::env::temp_dir().join(format!("fq-cmp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("c.json");
    let o = fastquery(&[
        "bench",
        "--workload",
        "tiny",
        "--schemes",
        "cheetah,iron,bumblebee,fastquery,fastquery-wan,fastquery-lan",
        "--tokens",
        "4",
        "--json",
        json.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("fastquery cost model"), "{t}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let schemes = v["schemes"].as_array().unwrap();
    assert_eq!(schemes.len(), 6);
    assert!(schemes.iter().all(|s| s["verified"] == true));
    // Batched schemes predict their bytes exactly.
    for s in schemes.iter().filter(|s| s["scheme"] != "cheetah") {
        assert_eq!(s["predicted_bytes"], s["measured_bytes"], "{}", s["scheme"]);
    }
    for ratios in ["ratios", "ratios_fastquery_wan", "ratios_fastquery_lan"] {
        for base in ["cheetah", "iron", "bumblebee"] {
            for key in ["comm", "lan_latency", "wan_latency"] {
                assert!(v[ratios][base][key].as_f64().unwrap() > 0.0, "{ratios} {base} {key}");
            }
        }
    }
    assert!(t.contains("fastquery-wan takes the least estimated WAN latency"), "{t}");
    let md = std::fs::read_to_string(dir.join("c.md")).unwrap();
    assert!(md.contains("| fastquery vs |"), "{md}");
    let svg = std::fs::read_to_string(dir.join("c.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("fastquery"), "{svg}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The values of an `.npy` file of uint64 written by `fastquery query` / `serve --shares-dir`.
fn npy_u64(path: &std::path::Path) -> Vec<u64> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + hlen..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// Starts `fastquery serve` with `args` on a free port; returns the child, its address and the
/// lines it printed up to the address's.
fn spawn_server(args: &[&str]) -> (std::process::Child, String, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let mut server = Command::new(env!("CARGO_BIN_EXE_fastquery"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let mut before = Vec::new();
    let addr = loop {
        let line = lines.next().expect("the server prints its address").unwrap();
        let addr = line.split(" at ").nth(1).map(|rest| rest.split_whitespace().next().unwrap().to_string());
        before.push(line);
        if let Some(addr) = addr {
            break addr;
        }
    };
    // Keep reading what else it prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    (server, addr, before)
}

/// A `serve` of `scheme` for `tokens` tokens per request on the default table, without a
/// self-check, writing its shares under `<dir>/server-shares`, with its access token in
/// `<dir>/token` (`dir`: a fresh temporary directory named after `name`).
struct SharesServer {
    dir: std::path::PathBuf,
    shares_dir: std::path::PathBuf,
    token: std::path::PathBuf,
    child: std::process::Child,
    addr: String,
    printed: Vec<String>,
}

fn serve_with_shares(name: &str, scheme: &str, tokens: &str) -> SharesServer {
    serve_with(name, &["--scheme", scheme, "--tokens", tokens, "--self-check", "0"])
}

/// [`serve_with_shares`] with the flags `args` instead of the scheme, tokens and self-check.
fn serve_with(name: &str, args: &[&str]) -> SharesServer {
    let dir = std::env::temp_dir().join(format!("fq-{name}-{}", std::process::id()));
    let shares_dir = dir.join("server-shares");
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "a-long-enough-test-token-42\n").unwrap();
    let files = ["--auth-token-file", token.to_str().unwrap(), "--shares-dir", shares_dir.to_str().unwrap()];
    let (child, addr, printed) = spawn_server(&[args, &files[..]].concat());
    SharesServer { dir, shares_dir, token, child, addr, printed }
}

/// `query`'s output `t` and shares `out` for cheetah's tokens `ids` (one request each) against
/// the server's share files: every row of the default table adds up.
fn assert_cheetah_shares_add_up(t: &str, out: &std::path::Path, shares_dir: &std::path::Path, ids: &[usize]) {
    let requests: Vec<&str> =
        t.split("request id(s): ").nth(1).unwrap().lines().next().unwrap().split(", ").collect();
    assert_eq!(requests.len(), ids.len(), "{t}");
    let client = npy_u64(out);
    let table = fastquery_table::IntTable::fixed_point(&fastquery_table::Workload::Tiny.synthetic(1), 12, 16)
        .unwrap();
    let (d, mask) = (table.d(), (1u64 << 37) - 1);
    assert_eq!(client.len(), ids.len() * d);
    for (row, (id, &k)) in requests.iter().zip(ids).enumerate() {
        let server = npy_u64(&shares_dir.join(format!("{id}.npy")));
        for c in 0..d {
            let sum = client[row * d + c].wrapping_add(server[c]) & mask;
            assert_eq!(sum, (i64::from(table.get(k, c)) as u64) & mask, "token {k} channel {c}");
        }
    }
}

/// `query --decode-steps G`: the prompt's ids in one request, then the last `G` one per request
/// on the same session (fastquery's design for four tokens); every row's two shares add up.
#[test]
fn query_sends_decode_steps_one_token_per_request() {
    use fastquery_protocol::harness::SchemeKind;
    let SharesServer { dir, shares_dir, token, child: mut server, addr, .. } =
        serve_with_shares("steps", "fastquery", "4");
    let token = token.to_str().unwrap();
    let out = dir.join("client.npy");
    let query = |steps: &str| {
        let args = ["query", "--server", &addr, "--auth-token-file", token, "--tokens", "1,5,9,300,511"];
        fastquery(&[&args[..], &["--decode-steps", steps, "--out", out.to_str().unwrap()]].concat())
    };
    let o = query("2");
    let too_many = query("6");
    let _ = server.kill();
    let _ = server.wait();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("2 decode steps (one token per request) after 3 prompt tokens"), "{t}");
    assert_eq!(too_many.status.code(), Some(2), "{}", text(&too_many));
    // One request for the prompt's three tokens, then one per decode step.
    let ids: Vec<&str> =
        t.split("request id(s): ").nth(1).unwrap().lines().next().unwrap().split(", ").collect();
    assert_eq!(ids.len(), 3, "{t}");
    let table = SchemeKind::FastQuery.table(&fastquery_table::Workload::Tiny.synthetic(1)).unwrap();
    let (d, mask) = (table.d(), (1u64 << SchemeKind::FastQuery.default_plain_bits()) - 1);
    let client = npy_u64(&out);
    let server: Vec<u64> = ids.iter().flat_map(|id| npy_u64(&shares_dir.join(format!("{id}.npy")))).collect();
    assert_eq!((client.len(), server.len()), (5 * d, 5 * d));
    for (row, k) in [1usize, 5, 9, 300, 511].into_iter().enumerate() {
        for c in 0..d {
            let sum = client[row * d + c].wrapping_add(server[row * d + c]) & mask;
            assert_eq!(sum, (i64::from(table.get(k, c)) as u64) & mask, "token {k} channel {c}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_and_query_with_tls() {
    let dir = std::env::temp_dir().join(format!("fq-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key, token) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("token"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    std::fs::write(&token, "a-long-enough-test-token-42").unwrap();
    let (mut server, addr, printed) = spawn_server(&[
        "--scheme",
        "fastquery",
        "--tokens",
        "4",
        "--session-tokens",
        "4",
        "--auth-token-file",
        token.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let out = dir.join("mine.npy");
    let (out_s, cert_s) = (out.to_str().unwrap(), cert.to_str().unwrap());
    let base = ["query", "--server", &addr, "--auth-token-file", token.to_str().unwrap(), "--tokens", "3,4"];
    let good =
        fastquery(&[&base[..], &["--out", out_s, "--tls-ca", cert_s, "--tls-name", "localhost"]].concat());
    // 127.0.0.1 is not the certificate's name: without --tls-name the handshake fails.
    let wrong_name = fastquery(&[&base[..], &["--out", out_s, "--tls-ca", cert_s]].concat());
    let plain = fastquery(&[&base[..], &["--out", out_s, "--timeout-s", "5"]].concat());
    let _ = server.kill();
    let _ = server.wait();
    // The server answered and verified one request of its own before it listened.
    let check = printed.iter().find(|l| l.starts_with("self-check:")).expect("a self-check line");
    assert!(check.contains("1 request(s) of 4 token(s)") && check.contains("verified"), "{check}");
    // It serves the design of its declared sessions, which the client derived from its Info.
    assert!(printed.iter().any(|l| l.contains("designed for sessions of 4 tokens")), "{printed:?}");
    assert!(good.status.success(), "{}", text(&good));
    assert!(text(&good).contains("request id(s):"), "{}", text(&good));
    assert_eq!(std::fs::metadata(&out).unwrap().len() as usize % 8, 0);
    assert_eq!(wrong_name.status.code(), Some(2), "{}", text(&wrong_name));
    assert!(text(&wrong_name).contains("TLS handshake failed"), "{}", text(&wrong_name));
    assert_eq!(plain.status.code(), Some(2), "{}", text(&plain));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_and_query_over_tcp_and_the_shares_add_up() {
    let SharesServer { dir, shares_dir, token, child: mut server, addr, printed } =
        serve_with_shares("serve", "cheetah", "1");
    // --self-check 0: no request of its own (and so no share file of its own either).
    assert!(!printed.iter().any(|l| l.starts_with("self-check:")), "{printed:?}");
    let out = dir.join("client.npy");
    let o = fastquery(&[
        "query",
        "--server",
        &addr,
        "--auth-token-file",
        token.to_str().unwrap(),
        "--tokens",
        "1,5,9",
        "--out",
        out.to_str().unwrap(),
    ]);
    let t = text(&o);
    let wrong = dir.join("wrong");
    std::fs::write(&wrong, "not-the-right-token-000").unwrap();
    let refused = fastquery(&[
        "query",
        "--server",
        &addr,
        "--auth-token-file",
        wrong.to_str().unwrap(),
        "--tokens",
        "1",
        "--out",
        dir.join("x.npy").to_str().unwrap(),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "{t}");
    assert!(t.contains("request id(s):") && t.contains("sent"), "{t}");
    // Cheetah answers one token per request: three server files, in request order.
    assert_cheetah_shares_add_up(&t, &out, &shares_dir, &[1, 5, 9]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("wrong access token"), "{}", text(&refused));
    // Nobody listens there any more.
    let down = fastquery(&[
        "query",
        "--server",
        &addr,
        "--auth-token-file",
        token.to_str().unwrap(),
        "--tokens",
        "1",
        "--out",
        dir.join("y.npy").to_str().unwrap(),
    ]);
    assert_eq!(down.status.code(), Some(2));
    assert!(text(&down).contains("cannot reach the server"), "{}", text(&down));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `FASTQUERY_COST_DEVICE` ranks the designs for a GPU server or a CPU one (a design input the
/// server sends its clients), whatever the backend; another value is a clear error.
#[test]
fn the_cost_device_is_a_strict_design_input() {
    let run = |v: &str| {
        Command::new(env!("CARGO_BIN_EXE_fastquery"))
            .args([
                "plan",
                "--table",
                "tiny",
                "--scheme",
                "fastquery-wan",
                "--tokens",
                "4",
                "--sessions",
                "8",
            ])
            .env("FASTQUERY_COST_DEVICE", v)
            .output()
            .expect("binary runs")
    };
    let (gpu, cpu) = (run("gpu"), run("cpu"));
    let (g, c) = (text(&gpu), text(&cpu));
    assert!(gpu.status.success() && g.contains("for a GPU server"), "{g}");
    assert!(cpu.status.success() && c.contains("-thread CPU server"), "{c}");
    // On the tiny table the WAN objective folds sessions without end for a GPU, not for a CPU.
    let endless =
        |t: &str| t.lines().find(|l| l.trim_start().starts_with("without end")).unwrap_or("").to_string();
    assert!(endless(&g).contains("folded") && endless(&c).contains("blocked"), "{g}\n{c}");
    let bad = run("tpu");
    let t = text(&bad);
    assert!(!bad.status.success() && t.contains("FASTQUERY_COST_DEVICE=tpu: expected cpu or gpu"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
}

/// `serve --devices`: several devices (or one named twice) need a backend that has them.
#[test]
fn several_devices_need_a_gpu_backend() {
    let dir = std::env::temp_dir().join(format!("fq-devices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "a-long-enough-test-token-42").unwrap();
    let serve = |backend: &str, devices: &str| {
        let o = fastquery(&[
            "--backend",
            backend,
            "serve",
            "--auth-token-file",
            token.to_str().unwrap(),
            "--devices",
            devices,
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(!text(&o).contains("panicked"), "{}", text(&o));
        text(&o)
    };
    let t = serve("cpu", "0,1");
    assert!(t.contains("--devices needs --backend cuda"), "{t}");
    let t = serve("cpu", "0,0");
    assert!(t.contains("--devices needs --backend cuda"), "{t}");
    let t = serve("cpu", "x");
    assert!(t.contains("invalid value 'x'"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `serve --devices 0,1` on the CUDA emulator: each emulated device preprocesses its copy of
/// the table and answers its own self-check, then a client's shares add up.
#[cfg(feature = "cuda-emulator")]
#[test]
fn serve_from_two_emulated_devices() {
    let SharesServer { dir, shares_dir, token, child: mut server, addr, printed } = serve_with(
        "two-devices",
        &[
            "--backend",
            "cuda-emulator",
            "--devices",
            "0,1",
            "--scheme",
            "cheetah",
            "--tokens",
            "1",
            "--self-check",
            "1",
        ],
    );
    let out = dir.join("client.npy");
    let token = token.to_str().unwrap();
    let o = fastquery(&[
        "query",
        "--server",
        &addr,
        "--auth-token-file",
        token,
        "--tokens",
        "1,5,9",
        "--out",
        out.to_str().unwrap(),
    ]);
    let _ = server.kill();
    let _ = server.wait();
    let all = printed.join("\n");
    assert!(all.contains("answered on each of 2 devices and every share verified"), "{all}");
    assert!(all.contains("on cuda (devices 0, 1)"), "{all}");
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert_cheetah_shares_add_up(&t, &out, &shares_dir, &[1, 5, 9]);
    let _ = std::fs::remove_dir_all(&dir);
}
