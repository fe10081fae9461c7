//! The test service of tests/support/test.capnp (`TestService`) served from Rust: what the C++
//! `hms-ffi-test-service` does, for the cross-language tests (a C++, Go or Rust caller calling a
//! Rust service, and killing it mid-call).
//!
//! Usage: `test_service [--socket PATH] [--id ID] [--version V] [--schema PATH] [--threads N]
//! [--transport auto|shm|socket]`; defaults: id `hms.test.rust`, version `1.0.0`, 4 threads.
//! Prints `ready pid=<pid>` once registered, `sleeping <ms>` when a sleep starts; stops on
//! SIGTERM/SIGINT.

use std::os::raw::c_int;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hms_ffi::{Client, Code, Error, Options, Request, ServiceOptions, Transport};

#[path = "support/json.rs"]
mod json;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
}

extern "C" fn on_stop_signal(_: c_int) {
    STOP.store(true, Ordering::Release);
}

/// What the service remembers across calls (as the C++ one does).
struct State {
    version: String,
    notes: Mutex<Vec<u64>>,
    sleeps: AtomicU64,
    streams_cancelled: AtomicU64,
    streams_finished: AtomicU64,
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity((bytes.len() + 2) / 3 * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 { A[(n >> 6) as usize & 63] as char } else { '=' });
        out.push(if chunk.len() > 2 { A[n as usize & 63] as char } else { '=' });
    }
    out
}

fn num(p: &json::Value, key: &str) -> u64 {
    p.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
}

fn handle(state: &State, req: &Request) -> hms_ffi::Result<String> {
    let params = req.params_json()?;
    let p = json::parse(&params).map_err(|e| Error::new(Code::InvalidArgument, e))?;
    match req.method() {
        // EchoParams and EchoResults have the same fields: the params are the results.
        "echo" => Ok(params),
        "sleep" => {
            let calls = state.sleeps.fetch_add(1, Ordering::Relaxed) + 1;
            let time_left_ms = req.time_left().map_or(u64::MAX, |d| d.as_millis() as u64);
            let ms = num(&p, "ms");
            println!("sleeping {}", ms);
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                if req.cancelled() {
                    return Err(Error::new(Code::Cancelled, "the caller went away"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(format!(r#"{{"timeLeftMs":"{}","calls":"{}"}}"#, time_left_ms, calls))
        }
        "fail" => {
            let code = num(&p, "code");
            if code == 9999 {
                panic!("handler exploded");
            }
            if code == 0 {
                return Ok("{}".into());
            }
            let message = p.get("message").and_then(|v| v.as_str()).unwrap_or("");
            Err(Error::new(Code::from_i32(code.min(i32::MAX as u64) as i32), message)
                .with_detail("hint", "asked to fail"))
        }
        "blob" => {
            let data: Vec<u8> = (0..num(&p, "size")).map(|i| (i * 31 + 7) as u8).collect();
            Ok(format!(r#"{{"data":"{}"}}"#, base64(&data)))
        }
        "whoami" => Ok(format!(
            r#"{{"pid":{},"version":{},"callerPid":{}}}"#,
            std::process::id(),
            json::quote(&state.version),
            req.caller_pid()
        )),
        "count" => {
            let (from, n, fail_at) = (num(&p, "from"), num(&p, "n"), num(&p, "failAt"));
            let (bytes, delay) = (num(&p, "payloadBytes"), num(&p, "delayUs"));
            for i in 0..n {
                let value = from + i;
                if fail_at != 0 && i == fail_at {
                    return Err(Error::new(Code::Aborted, format!("asked to fail at {}", i)));
                }
                let payload: Vec<u8> =
                    (0..bytes).map(|k| value.wrapping_mul(7).wrapping_add(k) as u8).collect();
                let item = format!(r#"{{"value":"{}","payload":"{}"}}"#, value, base64(&payload));
                if let Err(e) = req.stream_item(&item) {
                    if req.cancelled() || matches!(e.code(), Code::Cancelled | Code::Unavailable) {
                        state.streams_cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(e);
                }
                if delay > 0 {
                    std::thread::sleep(Duration::from_micros(delay));
                }
            }
            state.streams_finished.fetch_add(1, Ordering::Relaxed);
            Ok(String::new())
        }
        "note" => {
            state.notes.lock().unwrap().push(num(&p, "seq"));
            Ok("{}".into())
        }
        "stats" => {
            let notes: Vec<String> =
                state.notes.lock().unwrap().iter().map(|n| format!("\"{}\"", n)).collect();
            Ok(format!(
                r#"{{"notes":[{}],"streamsCancelled":"{}","streamsFinished":"{}","cancelCallbacks":"0"}}"#,
                notes.join(","),
                state.streams_cancelled.load(Ordering::Relaxed),
                state.streams_finished.load(Ordering::Relaxed)
            ))
        }
        other => Err(Error::new(
            Code::Unimplemented,
            format!("{} is not served by the Rust test service", other),
        )),
    }
}

fn main() -> ExitCode {
    let mut options = Options::new().name("rust-test-service");
    let mut id = "hms.test.rust".to_owned();
    let mut version = "1.0.0".to_owned();
    let mut schema =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/support/test.capnp").to_owned();
    let mut threads = 4usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = match args.next() {
            Some(v) => v,
            None => {
                eprintln!("test_service: {} needs a value", a);
                return ExitCode::from(2);
            }
        };
        match a.as_str() {
            "--socket" => options = options.socket_path(v),
            "--id" => id = v,
            "--version" => version = v,
            "--schema" => schema = v,
            "--threads" => threads = v.parse().unwrap_or(4).max(1),
            "--transport" => {
                options = options.transport(match v.as_str() {
                    "shm" => Transport::SharedMemory,
                    "socket" => Transport::Socket,
                    _ => Transport::Auto,
                })
            }
            _ => {
                eprintln!("test_service: unknown flag {}", a);
                return ExitCode::from(2);
            }
        }
    }
    // SAFETY: handlers that only store to an atomic.
    unsafe {
        signal(15, on_stop_signal);
        signal(2, on_stop_signal);
    }
    panic::set_hook(Box::new(|info| eprintln!("test_service: handler panicked: {}", info)));
    let client = match Client::connect(&options) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("test_service: {}", e);
            return ExitCode::from(1);
        }
    };
    let service_options =
        ServiceOptions::new().stream_method("count").concurrency(threads as u32 * 2);
    let service = match client.serve(&id, &version, &schema, "TestService", &service_options) {
        Ok(s) => s,
        Err(e) => {
            println!("register failed: {}", e);
            eprintln!("test_service: {}", e);
            return ExitCode::from(3);
        }
    };
    let state = State {
        version,
        notes: Mutex::new(Vec::new()),
        sleeps: AtomicU64::new(0),
        streams_cancelled: AtomicU64::new(0),
        streams_finished: AtomicU64::new(0),
    };
    println!("ready pid={}", std::process::id());
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let r = service.run(&STOP, |req| {
                    panic::catch_unwind(AssertUnwindSafe(|| handle(&state, req))).unwrap_or_else(
                        |_| {
                            Err(Error::new(
                                Code::Internal,
                                format!("the handler of {} panicked", req.method()),
                            ))
                        },
                    )
                });
                if let Err(e) = r {
                    eprintln!("test_service: {}", e);
                    failed.store(true, Ordering::Relaxed);
                    STOP.store(true, Ordering::Release);
                }
            });
        }
    });
    if failed.load(Ordering::Relaxed) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
