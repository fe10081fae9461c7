//! Calls from Rust to the C++ test service (`hms.test`, tests/support/test.capnp), each test on a
//! broker of its own, over both client transports.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{field, poll_readable, start_test_service, wait_until, Broker, TRANSPORTS};
use hms_ffi::{CallOptions, Client, Code, Options, Transport};

fn connect(broker: &Broker, transport: Transport) -> Client {
    Client::connect(&broker.options("rust-caller", transport)).expect("connect")
}

#[test]
fn echo_and_whoami_answer_over_both_transports() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let service = start_test_service(&broker, &[]);
        let client = connect(&broker, transport);
        if transport == Transport::Socket {
            assert!(!client.uses_shared_memory(), "a Socket client maps no shared memory");
        }
        let stub = client.bind("hms.test", "^1.0").expect("bind");
        assert_eq!(stub.service_id(), "hms.test");
        assert_eq!(stub.version(), "1.0.0");

        let reply = stub.call("echo", r#"{"seq": 7, "payload": "aGVsbG8="}"#).expect("echo");
        assert_eq!(field(&reply, "seq").as_u64(), Some(7), "{}", reply);
        assert_eq!(field(&reply, "payload").as_str(), Some("aGVsbG8="), "{}", reply);

        let me = stub.call("whoami", "{}").expect("whoami");
        assert_eq!(field(&me, "pid").as_u64(), Some(service.pid() as u64), "{}", me);
        assert_eq!(field(&me, "callerPid").as_u64(), Some(std::process::id() as u64), "{}", me);
        assert_eq!(field(&me, "version").as_str(), Some("1.0.0"));

        let pretty = stub
            .call_with("echo", r#"{"seq": "1"}"#, &CallOptions::new().pretty(true))
            .expect("pretty echo");
        assert!(pretty.contains('\n'), "pretty output is indented: {:?}", pretty);
    }
}

#[test]
fn service_error_keeps_code_source_and_details() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let _service = start_test_service(&broker, &[]);
        let client = connect(&broker, transport);
        let stub = client.bind("hms.test", "*").expect("bind");
        let err = stub
            .call("fail", r#"{"code": 5, "message": "no patient p-404"}"#)
            .expect_err("fail must fail");
        assert_eq!(err.code(), Code::NotFound, "{}", err);
        assert_eq!(err.message(), "no patient p-404");
        assert_eq!(err.source(), "hms.test");
        assert_eq!(err.detail("hint"), Some("asked to fail"), "{:?}", err.details());
        assert_eq!(
            err.to_string(),
            "NOT_FOUND: no patient p-404 [source: hms.test] [hint=asked to fail]"
        );
        // The error is a std error too.
        let boxed: Box<dyn std::error::Error> = Box::new(err);
        assert!(boxed.to_string().starts_with("NOT_FOUND"));
    }
}

#[test]
fn unknown_method_is_unimplemented_and_bad_json_is_invalid_argument() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let stub = client.bind("hms.test", "^1").expect("bind");

    let err = stub.call("noSuchMethod", "{}").expect_err("unknown method");
    assert_eq!(err.code(), Code::Unimplemented, "{}", err);

    for bad in [r#"{"seq": "not a number"}"#, r#"{"nope": 1}"#, r#"{"seq": 1"#, r#"{"payload": 5}"#]
    {
        let err = stub.call("echo", bad).expect_err(bad);
        assert_eq!(err.code(), Code::InvalidArgument, "{} -> {}", bad, err);
        assert!(!err.message().is_empty());
    }
    // A method name with a NUL cannot cross the C ABI.
    let err = stub.call("ec\0ho", "{}").expect_err("NUL");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[test]
fn bind_to_a_service_not_live_is_not_found() {
    let broker = Broker::start();
    let client = connect(&broker, Transport::Auto);
    let err = client.bind("hms.nobody", "*").expect_err("nobody serves it");
    assert_eq!(err.code(), Code::NotFound, "{}", err);
}

#[test]
fn connect_without_a_broker_fails() {
    let dir = common::TempDir::new("nobroker");
    let options = Options::new().socket_path(dir.path().join("broker.sock")).reconnect(false);
    let err = Client::connect(&options).expect_err("no broker");
    assert_ne!(err.code(), Code::Ok);
    assert_eq!(err.code(), Code::Unavailable, "{}", err);
}

#[test]
fn slow_call_hits_its_deadline_over_both_transports() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let _service = start_test_service(&broker, &[]);
        let client = connect(&broker, transport);
        let stub = client.bind("hms.test", "^1").expect("bind");
        let start = Instant::now();
        let err = stub
            .call_with(
                "sleep",
                r#"{"ms": 2000}"#,
                &CallOptions::new().timeout(Duration::from_millis(200)),
            )
            .expect_err("deadline");
        assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err);
        assert!(start.elapsed() < Duration::from_millis(1500), "took {:?}", start.elapsed());
    }
}

#[test]
fn client_default_timeout_applies_to_calls_without_one() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let options =
        broker.options("rust-caller", Transport::Auto).default_timeout(Duration::from_millis(200));
    let client = Client::connect(&options).expect("connect");
    let stub = client.bind("hms.test", "^1").expect("bind");
    let err = stub.call("sleep", r#"{"ms": 2000}"#).expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{}", err);
}

#[test]
fn async_call_completes_and_signals_its_fd() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let stub = client.bind("hms.test", "^1").expect("bind");
    let future = stub.call_async("echo", r#"{"seq": "42"}"#).expect("call_async");
    let fd = future.fd().expect("a future has a completion fd");
    assert_eq!(std::os::unix::io::AsRawFd::as_raw_fd(&future), fd);
    assert!(poll_readable(fd, Duration::from_secs(10)), "the fd becomes readable");
    assert!(future.poll());
    assert!(future.wait(Duration::from_millis(1)));
    let reply = future.result().expect("result");
    assert_eq!(field(&reply, "seq").as_u64(), Some(42));
}

#[test]
fn async_call_cancelled_completes_with_cancelled() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let _service = start_test_service(&broker, &[]);
        let client = connect(&broker, transport);
        let stub = client.bind("hms.test", "^1").expect("bind");
        let future = stub.call_async("sleep", r#"{"ms": 2000}"#).expect("call_async");
        assert!(!future.wait(Duration::from_millis(50)), "not done after 50 ms of 2 s");
        assert!(!future.poll());
        future.cancel().expect("cancel");
        let start = Instant::now();
        let err = future.result().expect_err("cancelled");
        assert_eq!(err.code(), Code::Cancelled, "{}", err);
        assert!(start.elapsed() < Duration::from_millis(1500), "took {:?}", start.elapsed());
        // The stub still works after a cancelled call.
        stub.call("echo", r#"{"seq": 1}"#).expect("echo after cancel");
    }
}

#[test]
fn stream_yields_each_item_then_ends() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let _service = start_test_service(&broker, &[]);
        let client = connect(&broker, transport);
        let stub = client.bind("hms.test", "^1").expect("bind");
        let stream = stub
            .open_stream("count", r#"{"from": "10", "n": "5", "payloadBytes": 3}"#)
            .expect("open_stream");
        let values: Vec<u64> = stream
            .map(|item| field(&item.expect("item"), "value").as_u64().expect("value"))
            .collect();
        assert_eq!(values, vec![10, 11, 12, 13, 14]);

        // A stream the service ends with an error yields the items, then the error, then ends.
        let mut stream = stub
            .open_stream("count", r#"{"from": "0", "n": "10", "failAt": "3"}"#)
            .expect("open_stream");
        for i in 0..3u64 {
            let item = stream.next().expect("an item").expect("ok");
            assert_eq!(field(&item, "value").as_u64(), Some(i));
        }
        let err = stream.next().expect("the end").expect_err("aborted");
        assert_eq!(err.code(), Code::Aborted, "{}", err);
        assert!(stream.next().is_none());
    }
}

#[test]
fn stream_cancelled_by_the_caller_stops() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let stub = client.bind("hms.test", "^1").expect("bind");
    let mut stream = stub
        .open_stream("count", r#"{"from": "0", "n": "1000000", "delayUs": 1000}"#)
        .expect("open_stream");
    stream.next().expect("first").expect("ok");
    stream.cancel().expect("cancel");
    // Whatever was in flight may still come; then the stream ends (an end or CANCELLED).
    let deadline = Instant::now() + Duration::from_secs(10);
    for item in &mut stream {
        if let Err(e) = item {
            assert_eq!(e.code(), Code::Cancelled, "{}", e);
            break;
        }
        assert!(Instant::now() < deadline, "the stream goes on after cancel");
    }
    drop(stream);
    // The service counts the stream as cancelled.
    assert!(wait_until(Duration::from_secs(10), || {
        let stats = stub.call("stats", "{}").expect("stats");
        field(&stats, "streamsCancelled").as_u64() == Some(1)
    }));
}

#[test]
fn oneway_calls_run_in_order() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let stub = client.bind("hms.test", "^1").expect("bind");
    for seq in 1..=3 {
        stub.call_oneway("note", &format!(r#"{{"seq": {}}}"#, seq)).expect("oneway");
    }
    let mut last = String::new();
    let all_ran = wait_until(Duration::from_secs(10), || {
        last = stub.call("stats", "{}").expect("stats");
        let notes = field(&last, "notes");
        let notes: Vec<u64> =
            notes.as_array().unwrap_or(&[]).iter().filter_map(|v| v.as_u64()).collect();
        notes == vec![1, 2, 3]
    });
    assert!(all_ran, "notes: {}", last);
}

#[test]
fn one_stub_is_shared_by_threads() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let stub = Arc::new(client.bind("hms.test", "^1").expect("bind"));
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let stub = Arc::clone(&stub);
            thread::spawn(move || {
                for i in 0..20u64 {
                    let seq = t * 1000 + i;
                    let reply =
                        stub.call("echo", &format!(r#"{{"seq": "{}"}}"#, seq)).expect("echo");
                    assert_eq!(field(&reply, "seq").as_u64(), Some(seq));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

#[test]
fn stub_of_a_dropped_client_is_unavailable() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let stub = client.bind("hms.test", "^1").expect("bind");
    stub.call("echo", "{}").expect("echo");
    drop(client);
    let err = stub.call("echo", "{}").expect_err("client gone");
    assert_eq!(err.code(), Code::Unavailable, "{}", err);
}

#[test]
fn service_killed_mid_call_is_unavailable_over_both_transports() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let mut service = start_test_service(&broker, &[]);
        let client = connect(&broker, transport);
        let stub = client.bind("hms.test", "^1").expect("bind");
        let future = stub
            .call_async_with(
                "sleep",
                r#"{"ms": 5000}"#,
                &CallOptions::new().timeout(Duration::from_secs(20)),
            )
            .expect("call_async");
        service.expect_line("sleeping 5000", Duration::from_secs(10));
        let start = Instant::now();
        service.kill9();
        let err = future.result().expect_err("the service died");
        assert_eq!(err.code(), Code::Unavailable, "{:?}: {}", transport, err);
        assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
    }
}

#[test]
fn contract_json_names_the_methods() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let contract = client.contract_json("hms.test", "1.0.0").expect("contract");
    assert_eq!(field(&contract, "id").as_str(), Some("hms.test"), "{}", contract);
    let methods = field(&contract, "methods");
    let names: Vec<&str> = methods
        .as_array()
        .expect("methods")
        .iter()
        .filter_map(|m| m.get("name").and_then(|n| n.as_str()))
        .collect();
    assert!(names.contains(&"echo") && names.contains(&"count"), "{}", contract);
    let err = client.contract_json("hms.test", "9.9.9").expect_err("no such version");
    assert_eq!(err.code(), Code::NotFound, "{}", err);
}

#[test]
fn the_longest_bounds_wait_instead_of_returning_at_once() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let stub = client.bind("hms.test", "^1").expect("bind");
    let future = stub.call_async("sleep", r#"{"ms": 300}"#).expect("call_async");
    let start = Instant::now();
    assert!(future.wait(Duration::MAX), "Duration::MAX waits for the result");
    assert!(start.elapsed() >= Duration::from_millis(200), "{:?}", start.elapsed());
    future.result().expect("result");
    let reply = stub
        .call_with("sleep", r#"{"ms": 10}"#, &CallOptions::new().timeout(Duration::MAX))
        .expect("a call with the longest deadline runs");
    assert!(field(&reply, "timeLeftMs").as_u64().expect("timeLeftMs") > 1_000_000);
}

extern "C" {
    fn fork() -> i32;
    fn _exit(code: i32) -> !;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
}

#[test]
fn forked_child_gets_failed_precondition_and_the_parent_goes_on() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = connect(&broker, Transport::Auto);
    let stub = client.bind("hms.test", "^1").expect("bind");
    stub.call("echo", "{}").expect("echo");
    // SAFETY: the child makes one call through the library (which refuses a parent's handle
    // before touching it) and leaves with _exit, running no destructor.
    let pid = unsafe { fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let code = match stub.call("echo", "{}") {
            Err(e) => e.code().as_i32(),
            Ok(_) => 100,
        };
        unsafe { _exit(code) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { waitpid(pid, &mut status, 0) }, pid);
    assert_eq!(status & 0x7f, 0, "the child exited normally");
    assert_eq!((status >> 8) & 0xff, Code::FailedPrecondition.as_i32(), "status {:#x}", status);
    stub.call("echo", "{}").expect("the parent's stub still works");
}
