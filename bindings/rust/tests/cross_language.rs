//! Processes in other languages on one broker: the Rust test service (examples/test_service.rs)
//! and the Go one (bindings/go/cmd/hms-go-test-service) called from Rust and from the C++
//! `hms-ffi` tool over both transports, and killed -9 mid-call.
//!
//! The Go service is `$HMS_FFI_GO_TEST_SERVICE` (ctest sets it; the tests fail if it is set and
//! missing), else `build/release/bindings/go/hms-go-test-service` when it was built (its tests
//! are skipped, saying so, when it was not).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{example_binary, field, Broker, Process, TRANSPORTS};
use hms_ffi::{CallOptions, Client, Code, Transport};

/// A test service in another process: which binary, and the id it serves.
struct Peer {
    lang: &'static str,
    binary: PathBuf,
    id: &'static str,
}

/// The test services to run against: Rust's always, Go's when it is there.
fn peers() -> Vec<Peer> {
    let rust = match std::env::var_os("HMS_FFI_RUST_TEST_SERVICE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => example_binary("test_service"),
    };
    assert!(
        rust.exists(),
        "{} is missing: run `cargo build --offline --examples` first",
        rust.display()
    );
    let mut peers = vec![Peer { lang: "rust", binary: rust, id: "hms.test.rust" }];
    let (go, required) = match std::env::var_os("HMS_FFI_GO_TEST_SERVICE") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                .join("build/release/bindings/go/hms-go-test-service"),
            false,
        ),
    };
    if go.exists() {
        peers.push(Peer { lang: "go", binary: go, id: "hms.test.go" });
    } else {
        assert!(!required, "HMS_FFI_GO_TEST_SERVICE={} is missing", go.display());
        eprintln!("skipped: the Go test service {} is not built", go.display());
    }
    peers
}

fn start(broker: &Broker, peer: &Peer, transport: &str) -> Process {
    let mut cmd = Command::new(&peer.binary);
    cmd.arg("--socket").arg(&broker.socket).args(["--id", peer.id, "--transport", transport]);
    let mut p = Process::spawn(&mut cmd);
    p.expect_line("ready", Duration::from_secs(20));
    p
}

/// Runs `hms-ffi --socket S call ARGS...`: (exit code, stdout, stderr).
fn cli(broker: &Broker, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::cli_binary())
        .arg("--socket")
        .arg(&broker.socket)
        .arg("call")
        .args(args)
        .output()
        .expect("run hms-ffi");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cpp_caller_calls_the_rust_and_go_services() {
    for peer in peers() {
        let broker = Broker::start();
        let _service = start(&broker, &peer, "auto");
        let (code, out, err) =
            cli(&broker, &[peer.id, "echo", r#"{"seq": "12", "payload": "AAE="}"#]);
        assert_eq!(code, 0, "{}: stdout: {} stderr: {}", peer.lang, out, err);
        assert_eq!(field(&out, "seq").as_u64(), Some(12), "{}", out);
        assert_eq!(field(&out, "payload").as_str(), Some("AAE="));

        let (code, out, err) =
            cli(&broker, &[peer.id, "fail", r#"{"code": 5, "message": "gone"}"#]);
        assert_eq!(code, 64 + 5, "{}: stdout: {} stderr: {}", peer.lang, out, err);
        let text = out + &err;
        assert!(
            text.contains("NOT_FOUND") && text.contains("gone") && text.contains(peer.id),
            "{}",
            text
        );

        let (code, out, err) = cli(&broker, &[peer.id, "count", r#"{"from": "5", "n": "3"}"#]);
        assert_eq!(code, 0, "{}: stdout: {} stderr: {}", peer.lang, out, err);
        let values: Vec<u64> =
            out.lines().map(|l| field(l, "value").as_u64().expect("value")).collect();
        assert_eq!(values, vec![5, 6, 7], "{}", peer.lang);
    }
}

#[test]
fn services_in_other_languages_answer_rust_callers_on_both_transports() {
    for peer in peers() {
        for flag in ["auto", "socket"] {
            let broker = Broker::start();
            let service = start(&broker, &peer, flag);
            for transport in TRANSPORTS {
                let what =
                    format!("{} service ({}) <- Rust caller ({:?})", peer.lang, flag, transport);
                let client =
                    Client::connect(&broker.options("rust-caller", transport)).expect("connect");
                let stub = client.bind(peer.id, "^1").expect("bind");
                let reply =
                    stub.call("echo", r#"{"seq": "31", "payload": "AQIDBA=="}"#).expect(&what);
                assert_eq!(field(&reply, "seq").as_u64(), Some(31), "{}: {}", what, reply);
                assert_eq!(field(&reply, "payload").as_str(), Some("AQIDBA=="), "{}", what);
                let me = stub.call("whoami", "{}").expect(&what);
                assert_eq!(field(&me, "pid").as_u64(), Some(service.pid() as u64), "{}", what);
                assert_eq!(field(&me, "callerPid").as_u64(), Some(std::process::id() as u64));
                let err = stub.call("fail", r#"{"code": 3, "message": "bad"}"#).expect_err(&what);
                assert_eq!(err.code(), Code::InvalidArgument, "{}: {}", what, err);
                assert_eq!(err.source(), peer.id, "{}", what);
                assert_eq!(err.detail("hint"), Some("asked to fail"), "{}", what);
                let values: Vec<u64> = stub
                    .open_stream("count", r#"{"from": "1", "n": "5", "payloadBytes": 8}"#)
                    .expect(&what)
                    .map(|i| field(&i.expect("item"), "value").as_u64().expect("value"))
                    .collect();
                assert_eq!(values, vec![1, 2, 3, 4, 5], "{}", what);
            }
        }
    }
}

#[test]
fn services_killed_mid_call_are_unavailable_to_rust_and_cpp_callers() {
    for peer in peers() {
        for (transport, flag) in [(Transport::Auto, "auto"), (Transport::Socket, "socket")] {
            let what = format!("{} service ({})", peer.lang, flag);
            let broker = Broker::start();
            let mut service = start(&broker, &peer, flag);
            let client =
                Client::connect(&broker.options("rust-caller", transport)).expect("connect");
            let stub = client.bind(peer.id, "^1").expect("bind");
            let future = stub
                .call_async_with(
                    "sleep",
                    r#"{"ms": 5000}"#,
                    &CallOptions::new().timeout(Duration::from_secs(20)),
                )
                .expect("call_async");
            // A C++ caller mid-call too.
            let mut cpp = Process::spawn(Command::new(common::cli_binary()).args([
                "--socket",
                broker.socket.to_str().unwrap(),
                "call",
                peer.id,
                "sleep",
                r#"{"ms": 5000}"#,
                "--timeout",
                "20s",
            ]));
            // Both sleeps started (each service serves calls in parallel).
            let deadline = Instant::now() + Duration::from_secs(10);
            while service.count_lines("sleeping", Duration::from_millis(100)) < 2 {
                assert!(Instant::now() < deadline, "{}: the sleeps did not both start", what);
            }
            let start = Instant::now();
            service.kill9();
            let err = future.result().expect_err("the service died");
            assert_eq!(err.code(), Code::Unavailable, "{}: {}", what, err);
            assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
            let code = cpp.wait_exit(Duration::from_secs(10));
            assert_eq!(code, Some(64 + 14), "{}: the C++ caller exits with UNAVAILABLE", what);
        }
    }
}
