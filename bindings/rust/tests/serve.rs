//! Serving from Rust: a `TestService` (tests/support/test.capnp) registered from this process
//! as `hms.test.rust`, answered on threads of the test, called from a Rust client.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{field, poll_readable, test_schema, wait_until, Broker, TRANSPORTS};
use hms_ffi::{CallOptions, Client, Code, Error, Request, Service, ServiceOptions, Transport};

const ID: &str = "hms.test.rust";

/// Details whose JSON needs every kind of escape.
const TRICKY: [(&str, &str); 4] = [
    ("quote", "say \"hi\""),
    ("path", "C:\\tmp\\new\nline\ttab"),
    ("unicode", "é ✓ 𝄞"),
    ("control", "\u{1}\u{1f}"),
];

fn serve(client: &Client) -> Service {
    client
        .serve(
            ID,
            "1.0.0",
            test_schema(),
            "TestService",
            &ServiceOptions::new().stream_method("count"),
        )
        .expect("serve")
}

/// A handler for a few TestService methods.
fn handler(req: &Request) -> hms_ffi::Result<String> {
    let params = req.params_json()?;
    match req.method() {
        "echo" => Ok(params),
        "whoami" => Ok(format!(
            r#"{{"pid":{},"version":"1.0.0","callerPid":{}}}"#,
            std::process::id(),
            req.caller_pid()
        )),
        "fail" => {
            let code = field(&params, "code").as_u64().unwrap_or(2) as i32;
            let message = field(&params, "message").as_str().unwrap_or("").to_owned();
            let mut e = Error::new(Code::from_i32(code), message);
            for (k, v) in TRICKY {
                e = e.with_detail(k, v);
            }
            Err(e)
        }
        "count" => {
            let n = field(&params, "n").as_u64().unwrap_or(0);
            for i in 0..n {
                req.stream_item(&format!(r#"{{"value":"{}"}}"#, i))?;
            }
            Ok(String::new())
        }
        other => Err(Error::new(Code::Unimplemented, format!("{} is not served here", other))),
    }
}

#[test]
fn rust_service_answers_rust_caller_over_both_transports() {
    for transport in TRANSPORTS {
        let broker = Broker::start();
        let server = Client::connect(&broker.options("rust-service", transport)).expect("connect");
        let service = serve(&server);
        let stop = AtomicBool::new(false);
        thread::scope(|s| {
            // Two threads take requests from the one service.
            let runners: Vec<_> = (0..2).map(|_| s.spawn(|| service.run(&stop, handler))).collect();

            let caller =
                Client::connect(&broker.options("rust-caller", transport)).expect("connect");
            let stub = caller.bind(ID, "^1").expect("bind");
            assert_eq!(stub.version(), "1.0.0");

            let reply = stub.call("echo", r#"{"seq": "9", "payload": "AAEC"}"#).expect("echo");
            assert_eq!(field(&reply, "seq").as_u64(), Some(9), "{}", reply);
            assert_eq!(field(&reply, "payload").as_str(), Some("AAEC"));

            let me = stub.call("whoami", "{}").expect("whoami");
            assert_eq!(field(&me, "callerPid").as_u64(), Some(std::process::id() as u64));

            let err = stub.call("fail", r#"{"code": 9, "message": "not now"}"#).expect_err("fail");
            assert_eq!(err.code(), Code::FailedPrecondition, "{}", err);
            assert_eq!(err.message(), "not now");
            assert_eq!(err.source(), ID);
            let expected: Vec<(String, String)> =
                TRICKY.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            assert_eq!(err.details(), &expected[..]);

            let values: Vec<u64> = stub
                .open_stream("count", r#"{"n": "4"}"#)
                .expect("stream")
                .map(|i| field(&i.expect("item"), "value").as_u64().expect("value"))
                .collect();
            assert_eq!(values, vec![0, 1, 2, 3]);

            let err = stub.call("blob", r#"{"size": 3}"#).expect_err("not served");
            assert_eq!(err.code(), Code::Unimplemented, "{}", err);
            assert_eq!(err.source(), ID);

            stop.store(true, Ordering::Release);
            for r in runners {
                r.join().expect("runner").expect("run ends cleanly");
            }
        });
    }
}

#[test]
fn request_shows_method_caller_deadline_and_trace() {
    let broker = Broker::start();
    let server =
        Client::connect(&broker.options("rust-service", Transport::Auto)).expect("connect");
    let service = serve(&server);
    let caller = Client::connect(&broker.options("rust-caller", Transport::Auto)).expect("connect");
    let stub = caller.bind(ID, "*").expect("bind");
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    thread::scope(|s| {
        let call = s.spawn(|| {
            let o = CallOptions::new().timeout(Duration::from_secs(5)).traceparent(traceparent);
            stub.call_with("echo", r#"{"seq": "3"}"#, &o)
        });
        let req = service.next(Duration::from_secs(10)).expect("next").expect("a request");
        assert_eq!(req.method(), "echo");
        assert!(!req.is_stream());
        assert_eq!(req.caller_pid(), std::process::id() as i32);
        assert_eq!(req.caller_uid(), current_uid());
        assert_eq!(req.caller_name(), "rust-caller");
        // The whole caller (ABI 1.1); the test broker runs without an access policy: no token,
        // no roles.
        let who = req.caller();
        assert_eq!(who.pid, std::process::id() as i32, "{}", req.caller_json());
        assert_eq!(who.uid, current_uid(), "{}", req.caller_json());
        assert_eq!(who.name, "rust-caller", "{}", req.caller_json());
        assert!(!who.authenticated, "{}", req.caller_json());
        assert!(who.roles.is_empty() && !who.has_role("doctor"), "{}", req.caller_json());
        assert!(who.subject.is_empty() && who.issuer.is_empty(), "{}", req.caller_json());
        assert_eq!(field(req.caller_json(), "pid").as_u64(), Some(std::process::id() as u64));
        let left = req.time_left().expect("the call has a deadline");
        assert!(left > Duration::ZERO && left <= Duration::from_secs(5), "{:?}", left);
        assert_eq!(req.traceparent(), Some(traceparent));
        assert!(!req.cancelled());
        assert_eq!(field(&req.params_json().expect("params"), "seq").as_u64(), Some(3));
        req.reply_error(Code::PermissionDenied, "not for you", &TRICKY).expect("reply_error");

        let err = call.join().expect("caller").expect_err("denied");
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err);
        assert_eq!(err.message(), "not for you");
        assert_eq!(err.source(), ID);
        assert_eq!(err.detail("quote"), Some("say \"hi\""));
        assert_eq!(err.detail("path"), Some("C:\\tmp\\new\nline\ttab"));
        assert_eq!(err.detail("unicode"), Some("é ✓ 𝄞"));
        assert_eq!(err.detail("control"), Some("\u{1}\u{1f}"));
    });
    assert!(service.next(Duration::from_millis(50)).expect("next").is_none(), "nothing else waits");
}

#[test]
fn results_that_do_not_fit_and_dropped_requests_reach_the_caller_as_internal() {
    let broker = Broker::start();
    let server =
        Client::connect(&broker.options("rust-service", Transport::Auto)).expect("connect");
    let service = serve(&server);
    let caller = Client::connect(&broker.options("rust-caller", Transport::Auto)).expect("connect");
    let stub = caller.bind(ID, "*").expect("bind");
    thread::scope(|s| {
        let call = s.spawn(|| stub.call("echo", r#"{"seq": "1"}"#));
        let req = service.next(Duration::from_secs(10)).expect("next").expect("a request");
        let err = req.reply_json(r#"{"noSuchField": 1}"#).expect_err("does not fit");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err);
        let err = call.join().expect("caller").expect_err("internal");
        assert_eq!(err.code(), Code::Internal, "{}", err);

        let call = s.spawn(|| stub.call("echo", r#"{"seq": "2"}"#));
        let req = service.next(Duration::from_secs(10)).expect("next").expect("a request");
        drop(req);
        let err = call.join().expect("caller").expect_err("dropped");
        assert_eq!(err.code(), Code::Internal, "{}", err);
    });
    // The stub still works.
    thread::scope(|s| {
        s.spawn(|| service.run(&AtomicBool::new(false), handler));
        let reply = stub.call("echo", r#"{"seq": "5"}"#).expect("echo");
        assert_eq!(field(&reply, "seq").as_u64(), Some(5));
        service.stop().expect("stop"); // ends run
    });
}

#[test]
fn stopped_service_leaves_the_registry_and_ends_run() {
    let broker = Broker::start();
    let server =
        Client::connect(&broker.options("rust-service", Transport::Auto)).expect("connect");
    let service = serve(&server);
    let caller = Client::connect(&broker.options("rust-caller", Transport::Auto)).expect("connect");
    caller.bind(ID, "*").expect("bind while served");
    thread::scope(|s| {
        let runner = s.spawn(|| service.run(&AtomicBool::new(false), handler));
        service.stop().expect("stop");
        runner.join().expect("runner").expect("run returns Ok once stopped");
    });
    let err = service.next(Duration::from_millis(10)).expect_err("stopped");
    assert_eq!(err.code(), Code::Unavailable, "{}", err);
    assert!(
        wait_until(Duration::from_secs(10), || {
            matches!(caller.bind(ID, "*"), Err(ref e) if e.code() == Code::NotFound)
        }),
        "the service leaves the registry"
    );
}

#[test]
fn service_fd_is_readable_while_a_request_waits() {
    let broker = Broker::start();
    let server =
        Client::connect(&broker.options("rust-service", Transport::Auto)).expect("connect");
    let service = serve(&server);
    let fd = service.fd().expect("a service has an fd");
    let caller = Client::connect(&broker.options("rust-caller", Transport::Auto)).expect("connect");
    let stub = caller.bind(ID, "*").expect("bind");
    thread::scope(|s| {
        let call = s.spawn(|| stub.call("echo", r#"{"seq": "8"}"#));
        assert!(poll_readable(fd, Duration::from_secs(10)));
        let req = service.next(Duration::from_millis(0)).expect("next").expect("it waits");
        req.reply_json(r#"{"seq": "8"}"#).expect("reply");
        assert_eq!(field(&call.join().unwrap().expect("echo"), "seq").as_u64(), Some(8));
    });
}

#[test]
fn incompatible_schema_or_unknown_interface_is_refused() {
    let broker = Broker::start();
    let server =
        Client::connect(&broker.options("rust-service", Transport::Auto)).expect("connect");
    let err = server
        .serve(ID, "1.0.0", test_schema(), "NoSuchInterface", &ServiceOptions::new())
        .expect_err("no such interface");
    assert_ne!(err.code(), Code::Ok);
    let err = server
        .serve(ID, "1.0.0", "/nonexistent/x.capnp", "TestService", &ServiceOptions::new())
        .expect_err("no such file");
    assert_ne!(err.code(), Code::Ok);
    let err = server
        .serve(
            ID,
            "1.0.0",
            test_schema(),
            "TestService",
            &ServiceOptions::new().stream_method("nope"),
        )
        .expect_err("no such stream method");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err);
}

extern "C" {
    fn getuid() -> u32;
}

fn current_uid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { getuid() }
}

#[test]
fn caller_killed_mid_call_shows_as_cancelled_to_the_rust_service() {
    let broker = Broker::start();
    let server =
        Client::connect(&broker.options("rust-service", Transport::Auto)).expect("connect");
    let service = serve(&server);
    // A C++ caller (the hms-ffi tool) in a process of its own.
    let mut caller =
        common::Process::spawn(std::process::Command::new(common::cli_binary()).args([
            "--socket",
            broker.socket.to_str().unwrap(),
            "call",
            ID,
            "sleep",
            r#"{"ms": 5000}"#,
            "--timeout",
            "20s",
        ]));
    let req = service.next(Duration::from_secs(10)).expect("next").expect("a request");
    assert_eq!(req.method(), "sleep");
    assert_eq!(req.caller_pid(), caller.pid() as i32);
    assert!(!req.cancelled());
    caller.kill9();
    assert!(
        wait_until(Duration::from_secs(10), || req.cancelled()),
        "the service sees its caller gone"
    );
    // Answering a request whose caller is gone is harmless.
    let _ = req.reply_json(r#"{"timeLeftMs": "0", "calls": "1"}"#);
}
