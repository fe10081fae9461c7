//! The Rust binding measured for `hms-ffi-bench --patterns bindings` (P13 in
//! `../shared/design/PERFORMANCE.md`): a JSON-level call and a raw-level call echoing 64 bytes to
//! the bench's echo service (`Echo.echo` of `schemas/hms/ffi/bench.capnp`), each in slices just
//! after a slice of Rust's own blocking Unix-socket ping-pong of 64 bytes with a child process
//! pinned to the service's CPU. Prints one JSON object per row on stdout.
//!
//! `bench --socket PATH --service ID --wait blocking|adaptive --iterations N [--peer-cpu C]`
//! `bench --uds-echo [--peer-cpu C]` (the ping-pong's peer, on fd 3; run by the first form)
//!
//! Built with `--release` (bindings/build-programs.sh does), as a user would measure.

use std::io::{Read, Write};
use std::os::raw::{c_int, c_long};
use std::os::unix::io::FromRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::Instant;

use hms_ffi::{CallOptions, Client, Options, WaitMode};

const SLICES: usize = 10;

extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
}

/// Moves this thread to `cpu` (sched_setaffinity); a negative cpu leaves it.
fn pin(cpu: i64) {
    if !(0..1024).contains(&cpu) {
        return;
    }
    let mut mask = [0u64; 16];
    mask[(cpu / 64) as usize] |= 1 << (cpu % 64);
    const SYS_SCHED_SETAFFINITY: c_long = 203; // x86_64
                                               // SAFETY: a valid mask of the size given, for this thread (pid 0).
    unsafe {
        syscall(SYS_SCHED_SETAFFINITY, 0 as c_int, std::mem::size_of_val(&mask), mask.as_ptr());
    }
}

fn percentile(ns: &[u64], q: f64) -> f64 {
    let mut s = ns.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return 0.0;
    }
    s[(q * (s.len() - 1) as f64) as usize] as f64 / 1000.0
}

fn row(name: &str, ns: &[u64], ratio: Option<f64>) {
    let extra = ratio.map_or(String::new(), |r| format!(",\"ratio_p50_to_baseline\":{:.4}", r));
    println!(
        "{{\"lang\":\"rust\",\"name\":\"{}\",\"samples\":{},\"p50_us\":{:.3},\"p90_us\":{:.3},\"p99_us\":{:.3}{}}}",
        name,
        ns.len(),
        percentile(ns, 0.5),
        percentile(ns, 0.9),
        percentile(ns, 0.99),
        extra
    );
}

fn timed(n: usize, f: &mut dyn FnMut() -> Result<(), String>) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed().as_nanos() as u64);
    }
    Ok(out)
}

/// The peer: blocking reads and writes of 64 bytes on fd 3 until EOF.
fn uds_echo() -> ExitCode {
    // SAFETY: fd 3 is the socket the parent passed, ours alone.
    let mut s = unsafe { UnixStream::from_raw_fd(3) };
    let mut buf = [0u8; 64];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&buf).is_err() {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// Echo.echo's params (or results: the same shape) as one Cap'n Proto segment: the root struct
/// pointer (no data words, one pointer), a byte-list pointer, then the payload.
fn encode_echo(payload: &[u8; 64], words: &mut [u64]) -> usize {
    words[0] = 1u64 << 48; // struct pointer, offset 0, 0 data words, 1 pointer
    words[1] = 1 | (2u64 << 32) | ((payload.len() as u64) << 35); // list of bytes, offset 0
    for (i, chunk) in payload.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        words[2 + i] = u64::from_le_bytes(w);
    }
    (2 + payload.len() / 8) * 8
}

/// The payload of an echo reply read in place (checked: the layout encode_echo writes).
fn decode_echo(segment: &[u8]) -> Result<&[u8], String> {
    let word = |i: usize| -> Result<u64, String> {
        let b = segment.get(i * 8..i * 8 + 8).ok_or("short reply")?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
    };
    let root = word(0)?;
    let list_at = 1 + ((root as u32 as i32) >> 2) as i64; // the struct's first pointer
    let list_ptr_index = (list_at + (root >> 32 & 0xffff) as i64) as usize;
    let list = word(list_ptr_index)?;
    if list & 3 != 1 || (list >> 32) & 7 != 2 {
        return Err("the reply's payload is not a byte list".into());
    }
    let start = (list_ptr_index as i64 + 1 + ((list as u32 as i32) >> 2) as i64) as usize * 8;
    let len = (list >> 35) as usize;
    segment.get(start..start + len).ok_or_else(|| "payload out of the segment".to_string())
}

/// 64 bytes of 5, as JSON carries Data.
const PAYLOAD_BASE64: &str =
    "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQ==";

/// `SLICES` slices of `per` samples of `f`, each just after a slice of the baseline `uds`; prints
/// the baseline's row and `f`'s, with the median over slices of their p50 ratio.
fn measure(
    per: usize,
    what: &str,
    uds: &mut dyn FnMut() -> Result<(), String>,
    f: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), String> {
    timed(per, uds)?; // warm-up of both
    timed(per, f)?;
    let (mut all_u, mut all_f, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SLICES {
        let u = timed(per, uds)?;
        let c = timed(per, f)?;
        ratios.push(percentile(&c, 0.5) / percentile(&u, 0.5));
        all_u.extend(u);
        all_f.extend(c);
    }
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    row("rust UDS ping-pong (blocking)", &all_u, None);
    row(&format!("rust {}", what), &all_f, Some(ratios[ratios.len() / 2]));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (mut socket, mut service, mut wait, mut iterations, mut peer_cpu, mut peer) = (
        String::new(),
        "hms.bench.echo.adaptive".to_string(),
        "adaptive".to_string(),
        20000usize,
        -1i64,
        false,
    );
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--socket" => socket = v,
            "--service" => service = v,
            "--wait" => wait = v,
            "--iterations" => iterations = v.parse().unwrap_or(20000),
            "--peer-cpu" => peer_cpu = v.parse().unwrap_or(-1),
            "--uds-echo" => {
                peer = true;
                i += 1;
                continue;
            }
            other => {
                eprintln!("bench: unknown argument {}", other);
                return ExitCode::from(2);
            }
        }
        i += 2;
    }
    if peer {
        pin(peer_cpu);
        return uds_echo();
    }
    let mode = match wait.as_str() {
        "blocking" => WaitMode::Blocking,
        "adaptive" => WaitMode::Adaptive,
        _ => {
            eprintln!("bench: --wait takes blocking or adaptive");
            return ExitCode::from(2);
        }
    };

    // Rust's own baseline: a socketpair with a child process echoing on fd 3.
    let (mut mine, theirs) = UnixStream::pair().expect("socketpair");
    let theirs_fd = std::os::unix::io::AsRawFd::as_raw_fd(&theirs);
    let mut child = {
        let mut c = Command::new(&args[0]);
        c.args(["--uds-echo", "--peer-cpu", &peer_cpu.to_string()]);
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            c.pre_exec(move || {
                extern "C" {
                    fn dup2(old: c_int, new: c_int) -> c_int;
                }
                if dup2(theirs_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c.spawn().expect("starting the ping-pong peer")
    };
    drop(theirs);
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut uds = || -> Result<(), String> {
        mine.write_all(&msg).map_err(|e| e.to_string())?;
        mine.read_exact(&mut back).map_err(|e| e.to_string())
    };

    let client = match Client::connect(
        &Options::default().socket_path(&socket).name("bench-rust").wait_mode(mode),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench: {}", e);
            return ExitCode::FAILURE;
        }
    };
    let mut stub = match client.bind(&service, "*") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {}", e);
            return ExitCode::FAILURE;
        }
    };
    let payload = [5u8; 64];
    let params = format!("{{\"payload\":\"{}\"}}", PAYLOAD_BASE64);
    let options = CallOptions::default();
    let per = (iterations / SLICES).max(100);
    let json = measure(per, &format!("JSON call, {}", wait), &mut uds, &mut || {
        let r = stub.call_with("echo", &params, &options).map_err(|e| e.to_string())?;
        if r != params {
            return Err(format!("the echo came back as {}", r));
        }
        Ok(())
    });
    let result = json.and_then(|_| {
        measure(per, &format!("raw call, {}", wait), &mut uds, &mut || {
            let mut loan = stub.loan_raw("echo", &options).map_err(|e| e.to_string())?;
            let size = encode_echo(&payload, loan.words_mut());
            let reply = loan.send(size).map_err(|e| e.to_string())?;
            if decode_echo(&reply)? != payload {
                return Err("the raw echo came back altered".into());
            }
            Ok(())
        })
    });
    drop(mine);
    let _ = child.wait();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {}", e);
            ExitCode::FAILURE
        }
    }
}
