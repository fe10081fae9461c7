//! Serving from Rust by pull: [`Service`], [`Request`], [`ServiceOptions`].

use std::ffi::CStr;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::raw::{c_char, c_void};
use std::os::unix::io::{AsRawFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::client::{cstring, wait_ns, Shared, ViewGuard};
use crate::error::{check, details_json, take_string, Code, Error, Result};
use crate::sys;

/// How a service is served; [`ServiceOptions::default()`] takes the library's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceOptions {
    /// A human-readable name for the registry (`hms-ffi list`).
    pub display_name: Option<String>,
    /// What the service does, for the registry.
    pub description: Option<String>,
    /// Size of each ring of a channel to this service; `None`: 1 MiB.
    pub ring_bytes: Option<u32>,
    /// Requests handed out at once (taken by [`Service::next`] and not yet answered); more wait
    /// in their channels. `None`: 16.
    pub concurrency: Option<u32>,
    /// Directories searched for the schema file's imports, `:`-separated; `None`: `/usr/include`
    /// and `/usr/local/include` (where `/capnp/c++.capnp` lives).
    pub import_path: Option<String>,
    /// The methods served as server streams (`["count"]`): their requests are answered by
    /// [`Request::stream_item`] per item, then [`Request::end_stream`] or
    /// [`Request::reply_error`].
    pub stream_methods: Vec<String>,
}

impl ServiceOptions {
    /// The defaults (same as [`ServiceOptions::default`]).
    pub fn new() -> ServiceOptions {
        ServiceOptions::default()
    }
    /// Sets [`ServiceOptions::display_name`].
    pub fn display_name(mut self, name: impl Into<String>) -> ServiceOptions {
        self.display_name = Some(name.into());
        self
    }
    /// Sets [`ServiceOptions::description`].
    pub fn description(mut self, description: impl Into<String>) -> ServiceOptions {
        self.description = Some(description.into());
        self
    }
    /// Sets [`ServiceOptions::ring_bytes`].
    pub fn ring_bytes(mut self, bytes: u32) -> ServiceOptions {
        self.ring_bytes = Some(bytes);
        self
    }
    /// Sets [`ServiceOptions::concurrency`].
    pub fn concurrency(mut self, n: u32) -> ServiceOptions {
        self.concurrency = Some(n);
        self
    }
    /// Sets [`ServiceOptions::import_path`].
    pub fn import_path(mut self, path: impl Into<String>) -> ServiceOptions {
        self.import_path = Some(path.into());
        self
    }
    /// Adds a method to [`ServiceOptions::stream_methods`].
    pub fn stream_method(mut self, method: impl Into<String>) -> ServiceOptions {
        self.stream_methods.push(method.into());
        self
    }
}

/// A service this process serves (`hms_service_t`), from [`crate::Client::serve`]. Requests
/// wait until [`Service::next`] takes them on the caller's thread (the library never calls into
/// Rust from a thread of its own), or [`Service::run`] loops over them with a handler.
///
/// Dropping it stops the service (it leaves the registry; see [`Service::stop`]) and frees it;
/// requests taken and not yet answered then answer their callers `UNAVAILABLE`. `Send + Sync`: several threads may
/// take requests from one service at once (up to [`ServiceOptions::concurrency`]).
#[derive(Debug)]
pub struct Service {
    raw: NonNull<sys::hms_service_t>,
    id: String,
    shared: Arc<Shared>,
}

// SAFETY: hms_ffi.h: handles may be used from any thread; the library's service state is under
// its own lock.
unsafe impl Send for Service {}
unsafe impl Sync for Service {}

impl Service {
    pub(crate) fn from_raw(
        raw: *mut sys::hms_service_t,
        id: &str,
        shared: Arc<Shared>,
    ) -> Result<Service> {
        NonNull::new(raw).map(|raw| Service { raw, id: id.to_owned(), shared }).ok_or_else(|| {
            Error::new(Code::Internal, "hms_client_serve returned OK and no service")
        })
    }

    /// The service's id (`"hms.cdf.debate"`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next request, waiting up to `timeout`: `Ok(None)` when none came in time,
    /// `Err(UNAVAILABLE)` once the service has stopped (or its client was dropped). BLOCKING
    /// up to `timeout`; `Duration::MAX` (or anything from about 31 years on) waits until a
    /// request comes or the service stops.
    pub fn next(&self, timeout: Duration) -> Result<Option<Request>> {
        let mut out = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; out-pointers are ours.
        let status = unsafe {
            sys::hms_service_next(self.raw.as_ptr(), wait_ns(timeout), &mut out, &mut err)
        };
        match check(status, err) {
            Ok(()) => {
                Ok(NonNull::new(out).map(|raw| Request { raw, shared: Arc::clone(&self.shared) }))
            }
            Err(e) if e.code() == Code::DeadlineExceeded => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A file descriptor readable while requests wait (level-triggered), for event loops; owned
    /// by the service. `None` if the library has none.
    pub fn fd(&self) -> Option<RawFd> {
        // SAFETY: a live handle.
        let fd = unsafe { sys::hms_service_fd(self.raw.as_ptr()) };
        if fd >= 0 {
            Some(fd)
        } else {
            None
        }
    }

    /// Leaves the registry: [`Service::next`] then returns `UNAVAILABLE` (and [`Service::run`]
    /// returns). The library lets go of requests taken and not answered yet: their callers get
    /// `UNAVAILABLE`, and answering them fails with `UNAVAILABLE` (docs/c-abi.md). Waits until
    /// no raw view of a request ([`RawParams`], a [`Request::reply_raw`] closure) is alive:
    /// never call it on a thread that holds one.
    pub fn stop(&self) -> Result<()> {
        // Stopping lets go of the taken requests: not under a raw view of one.
        let _no_raw_views = self.shared.release();
        // SAFETY: a live handle.
        let status = unsafe { sys::hms_service_stop(self.raw.as_ptr()) };
        check(status, ptr::null_mut())
    }

    /// Serves requests on this thread until `stop` is set (checked at least every 100 ms) or the
    /// service stops, answering each with `handler`:
    ///
    /// - a plain method: `Ok(json)` replies with those results, `Err(e)` with the error's code,
    ///   message and details ([`Error::new`], [`Error::with_detail`]);
    /// - a stream method ([`ServiceOptions::stream_methods`]): the handler sends the items with
    ///   [`Request::stream_item`]; `Ok(_)` then ends the stream normally, `Err(e)` with `e`.
    ///
    /// A reply that fails (results that do not fit the results type) is answered to the caller
    /// as `INTERNAL` by the library and does not stop the loop. Call `run` from several threads
    /// to serve requests in parallel.
    pub fn run<F>(&self, stop: &AtomicBool, mut handler: F) -> Result<()>
    where
        F: FnMut(&Request) -> Result<String>,
    {
        while !stop.load(Ordering::Acquire) {
            let req = match self.next(Duration::from_millis(100)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) if e.code() == Code::Unavailable => return Ok(()),
                Err(e) => return Err(e),
            };
            let answer = handler(&req);
            // The library answers the caller itself when a reply does not fit; nothing to do.
            let _ = req.reply(answer);
        }
        Ok(())
    }

    /// The raw handle, for calls into [`crate::sys`]; it stays owned by this service.
    pub fn as_raw(&self) -> *mut sys::hms_service_t {
        self.raw.as_ptr()
    }
}

impl AsRawFd for Service {
    /// [`Service::fd`], or -1 when there is none.
    fn as_raw_fd(&self) -> RawFd {
        self.fd().unwrap_or(-1)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // Freeing lets go of the taken requests: not under a raw view of one.
        let _no_raw_views = self.shared.release();
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle and free it once (the library stops the service first).
        unsafe { sys::hms_service_free(&mut p) };
    }
}

/// A request taken from a [`Service`] (`hms_request_t`): its method, params and caller. Answer
/// it once, with [`Request::reply_json`], [`Request::reply_error`] or (a stream)
/// [`Request::stream_item`]s then [`Request::end_stream`]; each of these consumes it. A request
/// dropped unanswered gets `INTERNAL` ("the service dropped the request").
///
/// `Send`: it may be answered from another thread than the one that took it.
#[derive(Debug)]
pub struct Request {
    raw: NonNull<sys::hms_request_t>,
    shared: Arc<Shared>,
}

// SAFETY: hms_ffi.h: handles may be used from any thread; the request's state is under the
// library's lock. Not Sync: one owner answers it.
unsafe impl Send for Request {}

impl Request {
    /// The method's name (`"evaluatePolicy"`).
    pub fn method(&self) -> &str {
        // SAFETY: valid while the request lives, which &self guarantees.
        unsafe { borrowed_str(sys::hms_request_method(self.raw.as_ptr())) }
    }

    /// Whether the method is served as a server stream.
    pub fn is_stream(&self) -> bool {
        // SAFETY: a live handle.
        unsafe { sys::hms_request_is_stream(self.raw.as_ptr()) != 0 }
    }

    /// The params as a JSON object. `DATA_LOSS` if the request cannot be read; `CANCELLED` or
    /// `UNAVAILABLE` once the caller is gone.
    pub fn params_json(&self) -> Result<String> {
        let mut json: *mut c_char = ptr::null_mut();
        let mut len = 0usize;
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; out-pointers are ours.
        let status = unsafe {
            sys::hms_request_params_json(self.raw.as_ptr(), &mut json, &mut len, &mut err)
        };
        check(status, err)?;
        // SAFETY: the library's string of len bytes.
        Ok(unsafe { take_string(json, len) })
    }

    /// The caller's pid, as the kernel told the broker.
    pub fn caller_pid(&self) -> i32 {
        // SAFETY: a live handle.
        unsafe { sys::hms_request_caller_pid(self.raw.as_ptr()) }
    }

    /// The caller's uid, as the kernel told the broker.
    pub fn caller_uid(&self) -> u32 {
        // SAFETY: a live handle.
        unsafe { sys::hms_request_caller_uid(self.raw.as_ptr()) }
    }

    /// The caller's client name ([`crate::Options::name`]).
    pub fn caller_name(&self) -> &str {
        // SAFETY: valid while the request lives.
        unsafe { borrowed_str(sys::hms_request_caller_name(self.raw.as_ptr())) }
    }

    /// The whole caller (docs/security.md) as the library gives it, one JSON object (ABI 1.1):
    /// `{"uid":1001,"gid":1001,"pid":4242,"groups":[1001,27],"name":"hms-api",
    /// "authenticated":true,"subject":"alice","issuer":"hms-auth","roles":["doctor"]}`. The
    /// kernel's identity of the calling process and the claims of the token the broker verified;
    /// the caller cannot alter any of it. `"roles"` are those the broker's access policy gives
    /// it (none without a policy). [`Request::caller`] parses it.
    pub fn caller_json(&self) -> &str {
        // SAFETY: valid while the request lives.
        unsafe { borrowed_str(sys::hms_request_caller_json(self.raw.as_ptr())) }
    }

    /// Who made the request: [`Request::caller_json`] parsed into a [`Caller`]. Should the text
    /// not parse (the library does not produce such), the caller is given with its pid, uid and
    /// name only: not authenticated, no groups, no roles.
    pub fn caller(&self) -> Caller {
        // SAFETY: NULL or a NUL-terminated string valid while the request lives.
        let text = unsafe {
            let p = sys::hms_request_caller_json(self.raw.as_ptr());
            if p.is_null() {
                &[][..]
            } else {
                CStr::from_ptr(p).to_bytes()
            }
        };
        Caller::from_json(text).unwrap_or_else(|| Caller {
            uid: self.caller_uid(),
            pid: self.caller_pid(),
            name: self.caller_name().to_owned(),
            ..Caller::default()
        })
    }

    /// Time left until the caller's deadline (zero once it passed); `None` when the call has
    /// no deadline.
    pub fn time_left(&self) -> Option<Duration> {
        // SAFETY: a live handle.
        let ns = unsafe { sys::hms_request_time_left_ns(self.raw.as_ptr()) };
        if ns == i64::MAX {
            None
        } else {
            Some(Duration::from_nanos(ns.max(0) as u64))
        }
    }

    /// The W3C traceparent the caller sent, if any.
    pub fn traceparent(&self) -> Option<&str> {
        // SAFETY: a live handle; the string lives while the request does.
        let p = unsafe { sys::hms_request_traceparent(self.raw.as_ptr()) };
        if p.is_null() {
            None
        } else {
            // SAFETY: non-NULL, NUL-terminated, valid while the request lives.
            Some(unsafe { borrowed_str(p) })
        }
    }

    /// Whether the caller cancelled, its deadline passed or it went away: an answer will not be
    /// read (stop working on it).
    pub fn cancelled(&self) -> bool {
        // SAFETY: a live handle.
        unsafe { sys::hms_request_cancelled(self.raw.as_ptr()) != 0 }
    }

    /// Answers with `results` (a JSON object of the method's results type). `INVALID_ARGUMENT`
    /// when the JSON does not fit: the caller then gets `INTERNAL` with that message.
    pub fn reply_json(self, results: &str) -> Result<()> {
        let mut raw = self.into_raw();
        let mut err = ptr::null_mut();
        // SAFETY: we own the request; the library frees it and NULLs raw.
        let status = unsafe {
            sys::hms_request_reply_json(
                &mut raw,
                results.as_ptr() as *const c_char,
                results.len(),
                &mut err,
            )
        };
        check(status, err)
    }

    /// Answers with an error: `code` (not [`Code::Ok`]), `message`, and `details` as key/value
    /// strings; the caller sees them with this service as the [`Error::source`].
    pub fn reply_error(self, code: Code, message: &str, details: &[(&str, &str)]) -> Result<()> {
        let json =
            if details.is_empty() { None } else { Some(details_json(details.iter().copied())) };
        self.reply_error_raw(code, message, json.as_deref())
    }

    /// Answers with `error`'s code, message and details.
    pub fn reply_err(self, error: &Error) -> Result<()> {
        let json = if error.details().is_empty() { None } else { Some(error.details_json()) };
        self.reply_error_raw(error.code(), error.message(), json.as_deref())
    }

    /// Answers with `Ok(results)` or `Err(error)`; a stream ends normally on `Ok(_)`.
    pub fn reply(self, answer: Result<String>) -> Result<()> {
        match answer {
            Ok(_) if self.is_stream() => self.end_stream(),
            Ok(json) => self.reply_json(&json),
            Err(e) => self.reply_err(&e),
        }
    }

    fn reply_error_raw(self, code: Code, message: &str, details_json: Option<&str>) -> Result<()> {
        // A C string cannot carry NUL: such bytes become U+FFFD rather than cutting the message.
        let message = cstring(&message.replace('\0', "\u{FFFD}"), "message")?;
        let details = match details_json {
            Some(d) => Some(cstring(d, "details")?),
            None => None,
        };
        let mut raw = self.into_raw();
        let mut err = ptr::null_mut();
        // SAFETY: we own the request; the library frees it and NULLs raw.
        let status = unsafe {
            sys::hms_request_reply_error(
                &mut raw,
                code.as_i32(),
                message.as_ptr(),
                details.as_ref().map_or(ptr::null(), |d| d.as_ptr()),
                &mut err,
            )
        };
        check(status, err)
    }

    /// A stream method: sends one item (a JSON object of the method's results type). BLOCKING
    /// while the caller's ring is full. `CANCELLED` or `UNAVAILABLE` when the caller stopped
    /// reading: end the stream then.
    pub fn stream_item(&self, item: &str) -> Result<()> {
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; item is passed with its length.
        let status = unsafe {
            sys::hms_request_stream_json(
                self.raw.as_ptr(),
                item.as_ptr() as *const c_char,
                item.len(),
                &mut err,
            )
        };
        check(status, err)
    }

    /// A stream method: ends the stream normally (the caller's iterator ends).
    pub fn end_stream(self) -> Result<()> {
        let mut raw = self.into_raw();
        let mut err = ptr::null_mut();
        // SAFETY: we own the request; NULL results end a stream; the library frees it.
        let status = unsafe { sys::hms_request_reply_json(&mut raw, ptr::null(), 0, &mut err) };
        check(status, err)
    }

    /// The raw level: the params as their one Cap'n Proto segment (the root pointer at offset 0,
    /// no segment table), read in place in the ring; `None` once the request can no longer be
    /// read (its service stopped). Parse it with a Cap'n Proto library (e.g. Debian's
    /// `librust-capnp-dev`) as a single-segment message.
    ///
    /// While the view lives, [`Service::stop`] and dropping the service or its client wait for
    /// it (they make the library let go of the memory): do not call them on this thread then.
    pub fn params_raw(&self) -> Option<RawParams<'_>> {
        let guard = self.shared.view();
        // SAFETY: a live handle; under the guard the library keeps the params where they are
        // until the request is answered, which needs `self` by value (not while borrowed).
        unsafe {
            let data = sys::hms_request_params_data(self.raw.as_ptr()) as *const u8;
            let size = sys::hms_request_params_size(self.raw.as_ptr());
            if data.is_null() {
                return None;
            }
            Some(RawParams { data: std::slice::from_raw_parts(data, size), _guard: guard })
        }
    }

    /// The raw level: answers with results written in place. `write` gets the loaned ring
    /// memory (zeroed, 8-byte aligned), writes one Cap'n Proto segment of the results type
    /// there (root pointer at offset 0, no segment table) and returns the bytes it used (whole
    /// 8-byte words, at least one); those are sent. Not for stream methods
    /// (`FAILED_PRECONDITION`). A size that is not whole words within the loan is
    /// `INVALID_ARGUMENT`, and the caller gets `INTERNAL`. A loan that fails frees the request
    /// (the caller gets `INTERNAL`, or nothing if it is gone).
    pub fn reply_raw<F>(self, write: F) -> Result<()>
    where
        F: FnOnce(&mut [u8]) -> usize,
    {
        let shared = Arc::clone(&self.shared);
        let _guard = shared.view();
        let mut data: *mut c_void = ptr::null_mut();
        let mut capacity = 0usize;
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; out-pointers are ours.
        let status = unsafe {
            sys::hms_request_loan_raw(self.raw.as_ptr(), &mut data, &mut capacity, &mut err)
        };
        check(status, err)?;
        let size = if data.is_null() {
            0
        } else {
            // SAFETY: the loan is `capacity` writable bytes, ours until the reply; under the
            // guard the library does not let go of it.
            write(unsafe { std::slice::from_raw_parts_mut(data as *mut u8, capacity) })
        };
        let mut raw = self.into_raw();
        let mut err = ptr::null_mut();
        // SAFETY: we own the request; the library frees it and NULLs raw.
        let status = unsafe { sys::hms_request_reply_raw(&mut raw, size, &mut err) };
        check(status, err)
    }

    /// The raw handle, for calls into [`crate::sys`]; it stays owned by this request.
    pub fn as_raw(&self) -> *mut sys::hms_request_t {
        self.raw.as_ptr()
    }

    /// Gives up ownership of the handle (no Drop; the shared state is released normally).
    fn into_raw(self) -> *mut sys::hms_request_t {
        let this = ManuallyDrop::new(self);
        // SAFETY: `this` is never used or dropped again: its Arc is read out once and dropped.
        drop(unsafe { ptr::read(&this.shared) });
        this.raw.as_ptr()
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle and free it once; unanswered, the caller gets INTERNAL.
        unsafe { sys::hms_request_free(&mut p) };
    }
}

/// Who made a request ([`Request::caller`], docs/security.md): the identity of the calling
/// process as the kernel told the broker, its client name, and the claims of the token the broker
/// verified. The caller cannot alter any of it. Without an access policy on the broker,
/// `authenticated` is false, `subject` and `issuer` are empty and `roles` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's gid.
    pub gid: u32,
    /// The caller's pid.
    pub pid: i32,
    /// The caller's supplementary groups.
    pub groups: Vec<u32>,
    /// The caller's client name ([`crate::Options::name`]).
    pub name: String,
    /// Whether the broker verified a token of the caller.
    pub authenticated: bool,
    /// The token's subject (empty when not authenticated).
    pub subject: String,
    /// The token's issuer (empty when not authenticated).
    pub issuer: String,
    /// The roles the broker's policy gives the caller (empty: no policy).
    pub roles: Vec<String>,
    /// The name of the caller's host when a gateway brought the call in from another host
    /// (docs/gateway.md), as that link's TLS certificate names it; `uid`, `pid`, `name`,
    /// `subject` and `issuer` are then as that host knows them. Empty for a caller of this host.
    pub host: String,
}

impl Caller {
    /// Whether the broker's policy gives the caller `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Parses the object of `hms_request_caller_json` ([`Request::caller_json`]); `None` when
    /// `text` is not such an object. Members it does not know are skipped; bytes that are not
    /// UTF-8 in a string become U+FFFD.
    pub fn from_json(text: &[u8]) -> Option<Caller> {
        let mut r = JsonReader { s: text, i: 0 };
        let mut c = Caller::default();
        r.expect(b'{')?;
        if r.peek() == Some(b'}') {
            r.i += 1;
        } else {
            loop {
                let key = r.string()?;
                r.expect(b':')?;
                match key.as_str() {
                    "uid" => c.uid = r.number()?.parse().ok()?,
                    "gid" => c.gid = r.number()?.parse().ok()?,
                    "pid" => c.pid = r.number()?.parse().ok()?,
                    "groups" => c.groups = r.array(|r| r.number()?.parse().ok())?,
                    "name" => c.name = r.string()?,
                    "authenticated" => c.authenticated = r.boolean()?,
                    "subject" => c.subject = r.string()?,
                    "issuer" => c.issuer = r.string()?,
                    "roles" => c.roles = r.array(JsonReader::string)?,
                    "host" => c.host = r.string()?,
                    _ => r.skip(0)?,
                }
                if r.peek() == Some(b',') {
                    r.i += 1;
                } else {
                    r.expect(b'}')?;
                    break;
                }
            }
        }
        r.ws();
        if r.i == text.len() {
            Some(c)
        } else {
            None
        }
    }
}

/// Just enough of a JSON reader for [`Caller::from_json`] (the crate has no dependencies).
struct JsonReader<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> JsonReader<'a> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|_| true),
            b'f' => self.literal(b"false").map(|_| false),
            _ => None,
        }
    }

    /// The text of a number (its parse() validates it).
    fn number(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        while matches!(self.s.get(self.i), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.i += 1;
        }
        if start == self.i {
            return None;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok()
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.i..self.i + 4)?;
        if !h.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xd800..0xdc00).contains(&cp) {
                                // A high surrogate: its low one must follow.
                                if self.s.get(self.i..self.i + 2) != Some(&b"\\u"[..]) {
                                    return None;
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return None;
                                }
                                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                            }
                            char::from_u32(cp)?
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                0..=0x1f => return None,
                _ => out.push(c),
            }
        }
        Some(match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn array<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.expect(b'[')?;
        let mut v = Vec::new();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Some(v);
        }
        loop {
            v.push(item(self)?);
            if self.peek() == Some(b',') {
                self.i += 1;
            } else {
                self.expect(b']')?;
                return Some(v);
            }
        }
    }

    /// Skips a value of a member [`Caller::from_json`] does not know (nested at most 32 deep).
    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > 32 {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b't' | b'f' => self.boolean().map(|_| ()),
            b'n' => self.literal(b"null"),
            b'[' => self.array(|r| r.skip(depth + 1)).map(|_| ()),
            b'{' => {
                self.i += 1;
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.expect(b':')?;
                    self.skip(depth + 1)?;
                    if self.peek() == Some(b',') {
                        self.i += 1;
                    } else {
                        return self.expect(b'}');
                    }
                }
            }
            _ => self.number().map(|_| ()),
        }
    }
}

#[cfg(test)]
mod caller_tests {
    use super::Caller;

    #[test]
    fn parses_the_caller_object_of_the_header() {
        let c = Caller::from_json(
            br#"{"uid":1001,"gid":1001,"pid":4242,"groups":[1001,27],"name":"hms-api",
                "authenticated":true,"subject":"alice","issuer":"hms-auth","roles":["doctor"]}"#,
        )
        .expect("parses");
        assert_eq!((c.uid, c.gid, c.pid), (1001, 1001, 4242));
        assert_eq!(c.groups, vec![1001, 27]);
        assert_eq!(c.name, "hms-api");
        assert!(c.authenticated);
        assert_eq!((c.subject.as_str(), c.issuer.as_str()), ("alice", "hms-auth"));
        assert!(c.has_role("doctor"));
        assert!(!c.has_role("nurse"));
        assert_eq!(c.host, "", "a caller of this host");
        let remote = Caller::from_json(
            br#"{"uid":1001,"pid":77,"name":"hms-api","roles":["doctor"],"host":"host-a"}"#,
        )
        .expect("parses");
        assert_eq!((remote.host.as_str(), remote.pid), ("host-a", 77));
    }

    #[test]
    fn parses_escapes_skips_unknown_members_and_refuses_what_is_not_the_object() {
        let c = Caller::from_json(
            br#"{"name":"a\"b\\c\n\u00e9\ud834\udd1e","new":{"x":[1,{"y":null}],"z":"}"},"roles":[],"groups":[]}"#,
        )
        .expect("parses");
        assert_eq!(c.name, "a\"b\\c\n\u{e9}\u{1d11e}");
        assert!(c.roles.is_empty() && !c.authenticated);
        assert_eq!(Caller::from_json(b"{}"), Some(Caller::default()));
        for bad in
            [&b""[..], b"\xff", b"{", b"{\"uid\":-1}", b"{\"name\":\"\\ud834\"}", b"{} x", b"[]"]
        {
            assert_eq!(Caller::from_json(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let lossy = Caller::from_json(b"{\"name\":\"a\xffb\"}").expect("parses");
        assert_eq!(lossy.name, "a\u{fffd}b");
    }
}

/// Borrows a NUL-terminated string of the library as `&str` ("" for NULL or bytes that are not
/// UTF-8, which the library does not produce for names).
///
/// # Safety
/// `p` is NULL or valid for the lifetime the caller gives the result.
unsafe fn borrowed_str<'a>(p: *const c_char) -> &'a str {
    if p.is_null() {
        return "";
    }
    CStr::from_ptr(p).to_str().unwrap_or("")
}

/// The params of a [`Request`] read in place in the ring ([`Request::params_raw`]): one Cap'n
/// Proto segment, root pointer at offset 0. Derefs to `&[u8]`. While it lives, whatever would
/// make the library let go of the memory (stopping or dropping the service or its client)
/// waits.
pub struct RawParams<'a> {
    data: &'a [u8],
    _guard: ViewGuard<'a>,
}

impl Deref for RawParams<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl AsRef<[u8]> for RawParams<'_> {
    fn as_ref(&self) -> &[u8] {
        self.data
    }
}

impl std::fmt::Debug for RawParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawParams").field("len", &self.data.len()).finish()
    }
}
