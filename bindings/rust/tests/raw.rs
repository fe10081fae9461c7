//! The raw level: Cap'n Proto segments written in loaned ring memory and read in place, from a
//! Rust caller to the C++ test service and to a service served from Rust, over both transports.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    echo_segment, field, parse_echo, start_test_service, test_schema, Broker, TRANSPORTS,
};
use hms_ffi::{CallOptions, Client, Code, ServiceOptions, Transport};

#[test]
fn raw_echo_to_the_cpp_service_over_both_transports() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let _service = start_test_service(&broker, &[]);
        let client = Client::connect(&broker.options("rust-raw", transport)).expect("connect");
        let mut stub = client.bind("hms.test", "^1").expect("bind");

        let msg = echo_segment(77, b"raw bytes!");
        let mut loan = stub.loan_raw("echo", &CallOptions::new()).expect("loan");
        assert!(loan.capacity() >= msg.len(), "{:?}", loan);
        assert!(loan.bytes_mut().iter().all(|b| *b == 0), "a loan is zeroed");
        loan.bytes_mut()[..msg.len()].copy_from_slice(&msg);
        let reply = loan.send(msg.len()).expect("send");
        assert_eq!(parse_echo(&reply), (77, b"raw bytes!".to_vec()));
        drop(reply);

        // The one-step form, and JSON calls on the same stub afterwards.
        let reply = stub.call_raw("echo", &echo_segment(5, &[1, 2, 3]), &CallOptions::new());
        assert_eq!(parse_echo(&reply.expect("call_raw")), (5, vec![1, 2, 3]));
        let json = stub.call("echo", r#"{"seq": "6"}"#).expect("json after raw");
        assert_eq!(field(&json, "seq").as_u64(), Some(6));
    }
}

#[test]
fn malformed_or_misplaced_raw_calls_are_refused_and_the_stub_goes_on() {
    let broker = Broker::start();
    let _service = start_test_service(&broker, &[]);
    let client = Client::connect(&broker.options("rust-raw", Transport::Auto)).expect("connect");
    let mut stub = client.bind("hms.test", "^1").expect("bind");
    let o = CallOptions::new().timeout(Duration::from_secs(10));

    // A root pointer far outside the segment.
    let mut bad = echo_segment(1, b"x");
    bad[..8].copy_from_slice(&(1000u64 << 2 | 1 << 32 | 1 << 48).to_le_bytes());
    let err = stub.call_raw("echo", &bad, &o).expect_err("out of bounds");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err);

    let err = stub.call_raw("echo", &[0u8; 12], &o).expect_err("not whole words");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err);
    let err = stub.loan_raw("count", &o).expect_err("a stream method");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err);
    let err = stub.loan_raw("noSuchMethod", &o).expect_err("unknown");
    assert_eq!(err.code(), Code::Unimplemented, "{}", err);

    // A loan dropped unsent gives the stub back.
    let loan = stub.loan_raw("echo", &o).expect("loan");
    drop(loan);
    let reply = stub.call_raw("echo", &echo_segment(9, b""), &o).expect("after abandon");
    assert_eq!(parse_echo(&reply), (9, vec![]));
    assert_eq!(
        field(&stub.call("echo", r#"{"seq": "3"}"#).expect("json"), "seq").as_u64(),
        Some(3)
    );
}

#[test]
fn rust_service_reads_and_answers_raw_over_both_transports() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let server = Client::connect(&broker.options("rust-service", transport)).expect("connect");
        let service = server
            .serve("hms.test.raw", "1.0.0", test_schema(), "TestService", &ServiceOptions::new())
            .expect("serve");
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            // Answers echo in place: seq + 1, the payload reversed.
            s.spawn(|| {
                while !stop.load(Ordering::Acquire) {
                    let req = match service.next(Duration::from_millis(50)).expect("next") {
                        Some(r) => r,
                        None => continue,
                    };
                    let (seq, mut payload) = parse_echo(&req.params_raw().expect("params"));
                    payload.reverse();
                    let out = echo_segment(seq + 1, &payload);
                    req.reply_raw(|mem| {
                        mem[..out.len()].copy_from_slice(&out);
                        out.len()
                    })
                    .expect("reply_raw");
                }
            });
            let caller =
                Client::connect(&broker.options("rust-caller", transport)).expect("connect");
            let mut stub = caller.bind("hms.test.raw", "*").expect("bind");
            // A JSON caller sees what the service wrote raw...
            let json = stub.call("echo", r#"{"seq": "41", "payload": "AQID"}"#).expect("json");
            assert_eq!(field(&json, "seq").as_u64(), Some(42), "{}", json);
            assert_eq!(field(&json, "payload").as_str(), Some("AwIB"), "{}", json);
            // ...and a raw caller too.
            let reply = stub
                .call_raw("echo", &echo_segment(7, b"abc"), &CallOptions::new())
                .expect("raw to raw");
            assert_eq!(parse_echo(&reply), (8, b"cba".to_vec()));
            stop.store(true, Ordering::Release);
        });
    }
}

#[test]
fn raw_reply_of_a_bad_size_reaches_the_caller_as_internal() {
    let broker = Broker::start();
    let server =
        Client::connect(&broker.options("rust-service", Transport::Auto)).expect("connect");
    let service = server
        .serve("hms.test.raw", "1.0.0", test_schema(), "TestService", &ServiceOptions::new())
        .expect("serve");
    let caller = Client::connect(&broker.options("rust-caller", Transport::Auto)).expect("connect");
    let stub = caller.bind("hms.test.raw", "*").expect("bind");
    thread::scope(|s| {
        let call = s.spawn(|| stub.call("echo", r#"{"seq": "1"}"#));
        let req = service.next(Duration::from_secs(10)).expect("next").expect("a request");
        let err = req.reply_raw(|_| 13).expect_err("not whole words");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err);
        let err = call.join().unwrap().expect_err("internal");
        assert_eq!(err.code(), Code::Internal, "{}", err);
    });
}

#[test]
fn stopping_a_service_waits_for_raw_views_of_its_requests() {
    let broker = Broker::start();
    let server =
        Client::connect(&broker.options("rust-service", Transport::Auto)).expect("connect");
    let service = server
        .serve("hms.test.raw", "1.0.0", test_schema(), "TestService", &ServiceOptions::new())
        .expect("serve");
    let caller = Client::connect(&broker.options("rust-caller", Transport::Auto)).expect("connect");
    let stub = caller.bind("hms.test.raw", "*").expect("bind");
    let viewing = AtomicBool::new(false);
    let view_done = AtomicBool::new(false);
    thread::scope(|s| {
        let call = s.spawn(|| stub.call("echo", r#"{"seq": "11"}"#));
        let req = service.next(Duration::from_secs(10)).expect("next").expect("a request");
        let (viewing, view_done) = (&viewing, &view_done);
        let reader = s.spawn(move || {
            let view = req.params_raw().expect("params");
            viewing.store(true, Ordering::Release);
            thread::sleep(Duration::from_millis(300));
            let seq = parse_echo(&view).0; // still readable: stop waits for this view
            view_done.store(true, Ordering::Release);
            drop(view);
            (seq, req)
        });
        assert!(common::wait_until(Duration::from_secs(10), || viewing.load(Ordering::Acquire)));
        let start = Instant::now();
        service.stop().expect("stop");
        assert!(view_done.load(Ordering::Acquire), "stop returned while a raw view was alive");
        assert!(start.elapsed() >= Duration::from_millis(100), "{:?}", start.elapsed());
        let (seq, req) = reader.join().unwrap();
        assert_eq!(seq, 11);
        // The library lets go of taken requests at stop (docs/c-abi.md; the header says they
        // stay answerable): either way the caller gets an answer now.
        let answered = req.reply_json(r#"{"seq": "12"}"#);
        match call.join().unwrap() {
            Ok(json) => {
                assert!(answered.is_ok());
                assert_eq!(field(&json, "seq").as_u64(), Some(12));
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{}", e);
                assert_eq!(answered.expect_err("refused").code(), Code::Unavailable);
            }
        }
    });
}
