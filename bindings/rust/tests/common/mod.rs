//! What the integration tests share: a private broker per test, the C++ test service and other
//! child processes, temporary directories, and waiting on conditions with deadlines.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use hms_ffi::{Client, Options, Transport};

#[path = "../../examples/support/json.rs"]
pub mod json;

/// Both transports a client can be set to; each transport-sensitive test runs with both.
pub const TRANSPORTS: [Transport; 2] = [Transport::Auto, Transport::Socket];

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn env_path(var: &str, default: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(default),
    }
}

pub fn broker_binary() -> PathBuf {
    env_path("HMS_FFI_BROKER_BINARY", "build/release/broker/hms-ffid")
}

pub fn test_service_binary() -> PathBuf {
    env_path("HMS_FFI_TEST_SERVICE_BINARY", "build/release/tests/hms-ffi-test-service")
}

/// The `hms-ffi` command-line tool (a C++ caller).
pub fn cli_binary() -> PathBuf {
    env_path("HMS_FFI_CLI_BINARY", "build/release/tools/hms-ffi")
}

/// tests/support/test.capnp of the tree: TestService, Tick.
pub fn test_schema() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/support/test.capnp"))
}

/// An example binary of this crate (cargo test builds the examples beside the test binaries).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("examples").join(name)
}

/// Polls `cond` until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A private directory (mode 0700, as the client's trust check wants the socket's directory),
/// removed with what it holds when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("hms-ffi-rust-{}-{}-{}", tag, std::process::id(), n));
        let _ = fs::remove_dir_all(&path);
        fs::DirBuilder::new().mode(0o700).create(&path).expect("create temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Stops a child: SIGTERM, up to 5 s to exit, then SIGKILL; always reaped.
fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: signals our own child, not yet reaped (its pid is still ours).
    unsafe { kill(child.id() as i32, SIGTERM) };
    let exited = wait_until(Duration::from_secs(5), || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A private `hms-ffid` on `<tmp>/broker.sock`, with its state in `<tmp>/state`; stopped and
/// reaped, and its directory removed, when dropped.
pub struct Broker {
    child: Child,
    pub socket: PathBuf,
    dir: TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        let dir = TempDir::new("broker");
        let socket = dir.path().join("broker.sock");
        let log = fs::File::create(dir.path().join("broker.log")).expect("broker log");
        let bin = broker_binary();
        let mut child = Command::new(&bin)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {}", bin.display(), e));
        let mut exited = None;
        let up = wait_until(Duration::from_secs(20), || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            // The socket file appears at bind(), before listen(): wait until a client connects
            // (a SOCK_SEQPACKET socket, which std cannot open: through the library itself).
            socket.exists()
                && Client::connect(
                    &Options::new().socket_path(&socket).name("probe").reconnect(false),
                )
                .is_ok()
        });
        if !up || exited.is_some() {
            let log = fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker did not come up (exit: {:?}); its log:\n{}", exited, log);
        }
        Broker { child, socket, dir }
    }

    /// Client options for this broker.
    pub fn options(&self, name: &str, transport: Transport) -> Options {
        Options::new().socket_path(&self.socket).name(name).transport(transport)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// A child process whose stdout is read line by line on a thread of its own, so that a test can
/// wait for a line with a deadline. Stopped (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Process {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Process {
    pub fn spawn(cmd: &mut Command) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {}", cmd, e));
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Process { child, lines: rx, seen: Vec::new() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for a line that starts with `prefix` (lines already read count);
    /// the line, or a panic that shows what the process printed.
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.starts_with(prefix);
                    self.seen.push(l.clone());
                    if hit {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "no line starting with {:?} within {:?} (exit: {:?}); output so far:\n{}",
                        prefix,
                        timeout,
                        status,
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// How many lines starting with `prefix` were printed so far, reading for up to `wait` more.
    pub fn count_lines(&mut self, prefix: &str, wait: Duration) -> usize {
        if let Ok(l) = self.lines.recv_timeout(wait) {
            self.seen.push(l);
        }
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Waits up to `timeout` for the process to exit by itself: its exit code (`None`: killed
    /// by a signal, or still running after `timeout`, when it is killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        let exited = wait_until(timeout, || match self.child.try_wait() {
            Ok(Some(s)) => {
                code = s.code();
                true
            }
            _ => false,
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        code
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        // SAFETY: our own child, not yet reaped.
        unsafe { kill(self.child.id() as i32, SIGKILL) };
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (SIGKILL after `timeout`) and every line printed.
    pub fn terminate(mut self, timeout: Duration) -> (Option<i32>, Vec<String>) {
        // SAFETY: our own child, not yet reaped.
        unsafe { kill(self.child.id() as i32, SIGTERM) };
        let mut code = None;
        let exited = wait_until(timeout, || match self.child.try_wait() {
            Ok(Some(s)) => {
                code = s.code();
                true
            }
            _ => false,
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The reader ends at EOF once the process is gone.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        (code, std::mem::take(&mut self.seen))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The C++ test service (`hms.test`, TestService) on `broker`, once it printed "ready".
pub fn start_test_service(broker: &Broker, extra: &[&str]) -> Process {
    let mut cmd = Command::new(test_service_binary());
    cmd.arg("--socket").arg(&broker.socket).args(extra);
    let mut p = Process::spawn(&mut cmd);
    p.expect_line("ready", Duration::from_secs(20));
    p
}

/// The member `key` of the JSON object `text`, panicking with the text when it is not there.
pub fn field(text: &str, key: &str) -> json::Value {
    let v = json::parse(text).unwrap_or_else(|e| panic!("{}: {}", e, text));
    v.get(key).cloned().unwrap_or_else(|| panic!("no {:?} in {}", key, text))
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

extern "C" {
    fn poll(fds: *mut PollFd, nfds: u64, timeout: i32) -> i32;
}

/// Whether `fd` becomes readable within `timeout` (poll(2)).
pub fn poll_readable(fd: i32, timeout: Duration) -> bool {
    const POLLIN: i16 = 1;
    let mut p = PollFd { fd, events: POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { poll(&mut p, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
    n == 1 && p.revents & POLLIN != 0
}

/// The raw level's test message, built by hand (no Cap'n Proto crate): one segment of a struct
/// with one data word and one pointer to `Data`, the layout of TestService's EchoParams and
/// EchoResults (`seq :UInt64`, `payload :Data`).
pub fn echo_segment(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut words: Vec<u64> = vec![
        1u64 << 32 | 1u64 << 48, // root: struct pointer, offset 0, 1 data word, 1 pointer
        seq,
    ];
    if payload.is_empty() {
        words.push(0); // a null pointer
    } else {
        // A list pointer: offset 0 (the list follows), element size 2 (bytes), the count.
        words.push(1 | 2u64 << 32 | (payload.len() as u64) << 35);
        let mut bytes = payload.to_vec();
        bytes.resize((payload.len() + 7) / 8 * 8, 0);
        words.extend(bytes.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())));
    }
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Reads `(seq, payload)` from a segment of that layout (any pointer offsets).
pub fn parse_echo(seg: &[u8]) -> (u64, Vec<u8>) {
    let word = |i: usize| u64::from_le_bytes(seg[i * 8..i * 8 + 8].try_into().unwrap());
    let offset = |p: u64| ((p as u32 as i32) >> 2) as i64; // signed 30 bits, in words
    let root = word(0);
    assert_eq!(root & 3, 0, "the root is a struct pointer");
    let start = (1 + offset(root)) as usize;
    let (data_words, pointers) = (((root >> 32) & 0xffff) as usize, (root >> 48) as usize);
    let seq = if data_words >= 1 { word(start) } else { 0 };
    let mut payload = Vec::new();
    if pointers >= 1 {
        let at = start + data_words;
        let p = word(at);
        if p != 0 {
            assert_eq!(p & 3, 1, "payload is a list pointer");
            assert_eq!((p >> 32) & 7, 2, "of bytes");
            let n = (p >> 35) as usize;
            let from = (at as i64 + 1 + offset(p)) as usize * 8;
            payload = seg[from..from + n].to_vec();
        }
    }
    (seq, payload)
}
