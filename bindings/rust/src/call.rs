//! Calls at the JSON level: [`Stub`], [`CallOptions`], [`Future`] and [`Stream`].

use std::ffi::CString;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::os::raw::{c_char, c_void};
use std::os::unix::io::{AsRawFd, RawFd};
use std::ptr::{self, NonNull};
use std::time::Duration;

use crate::client::{cstring, duration_ns, wait_ns};
use crate::error::{check, string_from, take_string, Code, Error, Result};
use crate::sys;

/// Per-call options: deadline, trace context, output format. [`CallOptions::default()`] takes
/// the client's default deadline.
///
/// ```
/// use std::time::Duration;
/// let o = hms_ffi::CallOptions::new().timeout(Duration::from_millis(200)).pretty(true);
/// # let _ = o;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// The deadline, from when the call starts; `None`: the client's
    /// [`default_timeout`](crate::Options::default_timeout). A zero duration expires at once;
    /// durations beyond about 31 years are clamped to that. For a stream, the deadline covers
    /// the whole stream.
    pub timeout: Option<Duration>,
    /// A W3C `traceparent` (`"00-<32 hex>-<16 hex>-<2 hex>"`) to carry to the service.
    pub traceparent: Option<String>,
    /// Indent the JSON that comes back.
    pub pretty: bool,
}

impl CallOptions {
    /// The defaults (same as [`CallOptions::default`]).
    pub fn new() -> CallOptions {
        CallOptions::default()
    }
    /// Sets [`CallOptions::timeout`].
    pub fn timeout(mut self, timeout: Duration) -> CallOptions {
        self.timeout = Some(timeout);
        self
    }
    /// Sets [`CallOptions::traceparent`].
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> CallOptions {
        self.traceparent = Some(traceparent.into());
        self
    }
    /// Sets [`CallOptions::pretty`].
    pub fn pretty(mut self, pretty: bool) -> CallOptions {
        self.pretty = pretty;
        self
    }
}

/// The C form of a `CallOptions`, with the strings it points to.
struct RawCallOptions {
    raw: sys::hms_call_options_t,
    _traceparent: Option<CString>,
}

impl RawCallOptions {
    fn new(o: &CallOptions) -> Result<RawCallOptions> {
        let traceparent = match &o.traceparent {
            Some(t) => Some(cstring(t, "traceparent")?),
            None => None,
        };
        let mut raw = std::mem::MaybeUninit::<sys::hms_call_options_t>::uninit();
        // SAFETY: init writes every field.
        let mut raw = unsafe {
            sys::hms_call_options_init(raw.as_mut_ptr());
            raw.assume_init()
        };
        if let Some(t) = o.timeout {
            // 0 means "the client's default" to the C ABI: a zero deadline becomes 1 ns.
            raw.timeout_ns = duration_ns(t).max(1);
        }
        raw.traceparent = traceparent.as_ref().map_or(ptr::null(), |t| t.as_ptr());
        raw.pretty = o.pretty as i32;
        Ok(RawCallOptions { raw, _traceparent: traceparent })
    }
}

/// A stub bound to one live version of a service (`hms_stub_t`): calls its methods with JSON
/// params and gets JSON results (`docs/contracts.md` has the mapping: 64-bit integers are decimal
/// strings, `Data` is base64, enums are their names).
///
/// A stub makes one call at a time: calls from several threads take turns (`Send + Sync`); bind
/// one stub per thread for parallel calls, or use [`Stub::call_async`].
#[derive(Debug)]
pub struct Stub {
    raw: NonNull<sys::hms_stub_t>,
    service_id: String,
    version: String,
}

// SAFETY: hms_ffi.h: handles may be used from any thread; a stub serialises its calls itself.
unsafe impl Send for Stub {}
unsafe impl Sync for Stub {}

impl Stub {
    pub(crate) fn from_raw(raw: *mut sys::hms_stub_t) -> Result<Stub> {
        let raw = NonNull::new(raw)
            .ok_or_else(|| Error::new(Code::Internal, "hms_client_bind returned OK and no stub"))?;
        // SAFETY: a live stub; both strings live while it does, and we copy them.
        let (service_id, version) = unsafe {
            (
                string_from(sys::hms_stub_service_id(raw.as_ptr())),
                string_from(sys::hms_stub_service_version(raw.as_ptr())),
            )
        };
        Ok(Stub { raw, service_id, version })
    }

    /// The id of the service bound (`"hms.cdf.debate"`).
    pub fn service_id(&self) -> &str {
        &self.service_id
    }

    /// The exact version bound (`"2.1.0"`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Calls `method` with `params` (a JSON object) and returns the results as a JSON object,
    /// with the client's default deadline. BLOCKING.
    ///
    /// `UNIMPLEMENTED` for a method the contract lacks, `INVALID_ARGUMENT` for JSON that does not
    /// fit the schema (naming the field), else the service's own error (with the service as
    /// [`Error::source`]), `DEADLINE_EXCEEDED`, or `UNAVAILABLE` when the service went away.
    pub fn call(&self, method: &str, params: &str) -> Result<String> {
        self.call_with(method, params, &CallOptions::default())
    }

    /// [`Stub::call`] with per-call options (deadline, traceparent, pretty output). BLOCKING.
    pub fn call_with(&self, method: &str, params: &str, options: &CallOptions) -> Result<String> {
        let m = cstring(method, "method")?;
        let o = RawCallOptions::new(options)?;
        let mut result: *mut c_char = ptr::null_mut();
        let mut len = 0usize;
        let mut err = ptr::null_mut();
        // SAFETY: live stub; method, params and options live across the call; params is passed
        // with its length (no NUL needed).
        let status = unsafe {
            sys::hms_stub_call_json(
                self.raw.as_ptr(),
                m.as_ptr(),
                params.as_ptr() as *const c_char,
                params.len(),
                &o.raw,
                &mut result,
                &mut len,
                &mut err,
            )
        };
        check(status, err)?;
        // SAFETY: the library's string of len bytes.
        Ok(unsafe { take_string(result, len) })
    }

    /// Sends a call that expects no reply: `Ok` once it is in the channel. May block while the
    /// service's ring is full (BLOCKING).
    pub fn call_oneway(&self, method: &str, params: &str) -> Result<()> {
        self.call_oneway_with(method, params, &CallOptions::default())
    }

    /// [`Stub::call_oneway`] with per-call options.
    pub fn call_oneway_with(
        &self,
        method: &str,
        params: &str,
        options: &CallOptions,
    ) -> Result<()> {
        let m = cstring(method, "method")?;
        let o = RawCallOptions::new(options)?;
        let mut err = ptr::null_mut();
        // SAFETY: as in call_with.
        let status = unsafe {
            sys::hms_stub_call_oneway_json(
                self.raw.as_ptr(),
                m.as_ptr(),
                params.as_ptr() as *const c_char,
                params.len(),
                &o.raw,
                &mut err,
            )
        };
        check(status, err)
    }

    /// Sends a call and returns at once with a [`Future`] of its result. May block while the
    /// ring is full (BLOCKING). A send that fails still gives a future, which holds the error.
    pub fn call_async(&self, method: &str, params: &str) -> Result<Future> {
        self.call_async_with(method, params, &CallOptions::default())
    }

    /// [`Stub::call_async`] with per-call options.
    pub fn call_async_with(
        &self,
        method: &str,
        params: &str,
        options: &CallOptions,
    ) -> Result<Future> {
        let m = cstring(method, "method")?;
        let o = RawCallOptions::new(options)?;
        let mut out = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: as in call_with.
        let status = unsafe {
            sys::hms_stub_call_async_json(
                self.raw.as_ptr(),
                m.as_ptr(),
                params.as_ptr() as *const c_char,
                params.len(),
                &o.raw,
                &mut out,
                &mut err,
            )
        };
        check(status, err)?;
        NonNull::new(out).map(|raw| Future { raw }).ok_or_else(|| {
            Error::new(Code::Internal, "hms_stub_call_async_json returned OK and no future")
        })
    }

    /// Opens a server stream (a method the service serves as a stream): iterate the [`Stream`]
    /// for its items. The client's default deadline covers the whole stream: give a longer
    /// [`CallOptions::timeout`] with [`Stub::open_stream_with`] for a stream that lasts. A plain
    /// method is `FAILED_PRECONDITION` here (and a stream method with [`Stub::call`]).
    pub fn open_stream(&self, method: &str, params: &str) -> Result<Stream> {
        self.open_stream_with(method, params, &CallOptions::default())
    }

    /// [`Stub::open_stream`] with per-call options.
    pub fn open_stream_with(
        &self,
        method: &str,
        params: &str,
        options: &CallOptions,
    ) -> Result<Stream> {
        let m = cstring(method, "method")?;
        let o = RawCallOptions::new(options)?;
        let mut out = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: as in call_with.
        let status = unsafe {
            sys::hms_stub_open_stream_json(
                self.raw.as_ptr(),
                m.as_ptr(),
                params.as_ptr() as *const c_char,
                params.len(),
                &o.raw,
                &mut out,
                &mut err,
            )
        };
        check(status, err)?;
        NonNull::new(out).map(|raw| Stream { raw, done: false }).ok_or_else(|| {
            Error::new(Code::Internal, "hms_stub_open_stream_json returned OK and no stream")
        })
    }

    /// The raw level: loans zeroed ring memory (8-byte aligned) for the params of `method`, to
    /// write one Cap'n Proto segment into (the root pointer at offset 0, no segment table, e.g.
    /// with Debian's `librust-capnp-dev`); [`Loan::send`] sends it and returns the reply read in
    /// place. Zero-copy both ways. May block while the ring is full (BLOCKING).
    ///
    /// The loan and then the reply hold the stub (`&mut self`): no other call goes on it until
    /// they are dropped. `UNIMPLEMENTED` for a method the contract lacks, `FAILED_PRECONDITION`
    /// for a stream method (raw calls are unary only).
    pub fn loan_raw(&mut self, method: &str, options: &CallOptions) -> Result<Loan<'_>> {
        let m = cstring(method, "method")?;
        let o = RawCallOptions::new(options)?;
        let mut data: *mut c_void = ptr::null_mut();
        let mut capacity = 0usize;
        let mut err = ptr::null_mut();
        // SAFETY: live stub; method and options live across the call; out-pointers are ours.
        let status = unsafe {
            sys::hms_stub_loan_raw(
                self.raw.as_ptr(),
                m.as_ptr(),
                &o.raw,
                &mut data,
                &mut capacity,
                &mut err,
            )
        };
        check(status, err)?;
        match NonNull::new(data as *mut u8) {
            Some(data) => Ok(Loan { stub: self, data, capacity }),
            None => {
                // SAFETY: a live stub; gives back whatever the library holds.
                unsafe { sys::hms_stub_abandon_raw(self.raw.as_ptr()) };
                Err(Error::new(Code::Internal, "hms_stub_loan_raw returned OK and no memory"))
            }
        }
    }

    /// The raw level in one step: copies `segment` (one Cap'n Proto segment, root pointer at
    /// offset 0, a whole number of 8-byte words) into a loan, sends it, and copies the reply's
    /// segment out. BLOCKING. `RESOURCE_EXHAUSTED` when the segment is larger than the loan.
    pub fn call_raw(
        &mut self,
        method: &str,
        segment: &[u8],
        options: &CallOptions,
    ) -> Result<Vec<u8>> {
        let mut loan = self.loan_raw(method, options)?;
        if segment.len() > loan.capacity() {
            return Err(Error::new(
                Code::ResourceExhausted,
                format!(
                    "a raw message of {} bytes does not fit the loan of {} bytes",
                    segment.len(),
                    loan.capacity()
                ),
            ));
        }
        loan.bytes_mut()[..segment.len()].copy_from_slice(segment);
        let reply = loan.send(segment.len())?;
        Ok(reply.data().to_vec())
    }

    /// The raw handle, for calls into [`crate::sys`]; it stays owned by this stub.
    pub fn as_raw(&self) -> *mut sys::hms_stub_t {
        self.raw.as_ptr()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle and free it once.
        unsafe { sys::hms_stub_free(&mut p) };
    }
}

/// The result of an asynchronous call (`hms_future_t`), from [`Stub::call_async`].
///
/// Wait for it ([`Future::wait`]), poll it ([`Future::poll`]), or watch its file descriptor
/// ([`Future::fd`], readable once the result is there) from an event loop; then take the result
/// once with [`Future::result`]. Dropping a future whose call is in flight drops its result (the
/// call goes on). `Send`, not `Sync`.
#[derive(Debug)]
pub struct Future {
    raw: NonNull<sys::hms_future_t>,
}

// SAFETY: hms_ffi.h: handles may be used from any thread. Not Sync: one owner at a time.
unsafe impl Send for Future {}

impl Future {
    /// Whether the result is there ([`Future::result`] will not wait).
    pub fn poll(&self) -> bool {
        // SAFETY: a live handle.
        unsafe { sys::hms_future_poll(self.raw.as_ptr()) != 0 }
    }

    /// Waits up to `timeout` for the result: `true` once it is there, `false` if it is not yet.
    /// BLOCKING up to `timeout`; `Duration::MAX` (or anything from about 31 years on) waits
    /// without a bound of its own, until the call's deadline completes it.
    pub fn wait(&self, timeout: Duration) -> bool {
        // SAFETY: a live handle.
        unsafe { sys::hms_future_wait(self.raw.as_ptr(), wait_ns(timeout)) == sys::HMS_OK }
    }

    /// A file descriptor that becomes readable when the result is there, for poll/epoll/event
    /// loops; owned by the future (do not close it), valid until the future is dropped. `None`
    /// if the library could not make one.
    pub fn fd(&self) -> Option<RawFd> {
        // SAFETY: a live handle.
        let fd = unsafe { sys::hms_future_fd(self.raw.as_ptr()) };
        if fd >= 0 {
            Some(fd)
        } else {
            None
        }
    }

    /// Stops the call: the future completes with `CANCELLED` unless the result came first.
    pub fn cancel(&self) -> Result<()> {
        // SAFETY: a live handle.
        let status = unsafe { sys::hms_future_cancel(self.raw.as_ptr()) };
        check(status, ptr::null_mut())
    }

    /// The call's results as a JSON object, or its error. BLOCKING until the result is there
    /// (bounded by the call's deadline).
    pub fn result(self) -> Result<String> {
        let mut result: *mut c_char = ptr::null_mut();
        let mut len = 0usize;
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; the result is taken once (self is consumed).
        let status = unsafe {
            sys::hms_future_result_json(self.raw.as_ptr(), &mut result, &mut len, &mut err)
        };
        check(status, err)?;
        // SAFETY: the library's string of len bytes.
        Ok(unsafe { take_string(result, len) })
    }
}

impl AsRawFd for Future {
    /// [`Future::fd`], or -1 when there is none.
    fn as_raw_fd(&self) -> RawFd {
        self.fd().unwrap_or(-1)
    }
}

impl Drop for Future {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle and free it once.
        unsafe { sys::hms_future_free(&mut p) };
    }
}

/// A server stream (`hms_stream_t`), from [`Stub::open_stream`]: an iterator of its items as
/// JSON objects. It ends (`None`) when the service finished the stream; a stream the service
/// ended with an error yields that error once, then ends. Each `next` is BLOCKING until the next
/// item. Dropping a stream that has not ended cancels it. `Send`, not `Sync`.
#[derive(Debug)]
pub struct Stream {
    raw: NonNull<sys::hms_stream_t>,
    done: bool,
}

// SAFETY: hms_ffi.h: handles may be used from any thread. Not Sync: one reader at a time.
unsafe impl Send for Stream {}

impl Stream {
    /// Stops the stream: the service sees the caller gone and ends it.
    pub fn cancel(&self) -> Result<()> {
        // SAFETY: a live handle.
        let status = unsafe { sys::hms_stream_cancel(self.raw.as_ptr()) };
        check(status, ptr::null_mut())
    }
}

impl Iterator for Stream {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        if self.done {
            return None;
        }
        let mut item: *mut c_char = ptr::null_mut();
        let mut len = 0usize;
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; out-pointers are ours.
        let status =
            unsafe { sys::hms_stream_next_json(self.raw.as_ptr(), &mut item, &mut len, &mut err) };
        if let Err(e) = check(status, err) {
            self.done = true;
            return Some(Err(e));
        }
        if item.is_null() {
            self.done = true;
            return None;
        }
        // SAFETY: the library's string of len bytes.
        Some(Ok(unsafe { take_string(item, len) }))
    }
}

impl std::iter::FusedIterator for Stream {}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle and free it once (the library cancels a live stream).
        unsafe { sys::hms_stream_free(&mut p) };
    }
}

/// Ring memory loaned for the params of a raw call ([`Stub::loan_raw`]): zeroed, 8-byte aligned,
/// [`Loan::capacity`] bytes. Write one Cap'n Proto segment at its start, then [`Loan::send`];
/// dropping it unsent gives the memory back. Holds its stub meanwhile.
pub struct Loan<'a> {
    stub: &'a mut Stub,
    data: NonNull<u8>,
    capacity: usize,
}

impl<'a> Loan<'a> {
    /// How many bytes may be written.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The loaned memory, zeroed when loaned. Leave the bytes after the message zero: the
    /// rings rely on free space being zero.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `capacity` writable bytes of the channel's ring, ours until sent or abandoned;
        // the stub (and so its channel) is borrowed for as long as this loan lives.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.capacity) }
    }

    /// The loaned memory as 64-bit words (Cap'n Proto's unit), for builders that want them.
    pub fn words_mut(&mut self) -> &mut [u64] {
        // SAFETY: as bytes_mut; the library loans 8-byte aligned memory (checked in debug).
        debug_assert_eq!(self.data.as_ptr() as usize % 8, 0);
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr() as *mut u64, self.capacity / 8) }
    }

    /// Sends the first `size` bytes (whole 8-byte words, at least one) and waits for the reply
    /// (BLOCKING). The service checks the message like any other: a malformed one is
    /// `INVALID_ARGUMENT`, and the stub goes on. The reply is read in place until dropped.
    pub fn send(self, size: usize) -> Result<RawReply<'a>> {
        let this = ManuallyDrop::new(self);
        let stub = this.stub.raw.as_ptr();
        let mut reply = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: a live stub with a loan; send_raw consumes the loan whatever it returns (an
        // error gives it back), so it is never abandoned after this.
        let status = unsafe { sys::hms_stub_send_raw(stub, size, &mut reply, &mut err) };
        check(status, err)?;
        NonNull::new(reply)
            .map(|raw| RawReply { raw, _stub: PhantomData })
            .ok_or_else(|| Error::new(Code::Internal, "hms_stub_send_raw returned OK and no reply"))
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        // SAFETY: a live stub with a loan not sent.
        unsafe { sys::hms_stub_abandon_raw(self.stub.raw.as_ptr()) };
    }
}

impl std::fmt::Debug for Loan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan").field("capacity", &self.capacity).finish()
    }
}

/// The reply of a raw call ([`Loan::send`]): its one Cap'n Proto segment (root pointer at offset
/// 0), read in place in the ring. Derefs to `&[u8]`. Holds its stub until dropped (the stub's
/// next call waits for the ring space it occupies).
pub struct RawReply<'a> {
    raw: NonNull<sys::hms_reply_t>,
    _stub: PhantomData<&'a mut Stub>,
}

impl RawReply<'_> {
    /// The segment's bytes.
    pub fn data(&self) -> &[u8] {
        // SAFETY: a live reply; its memory stays until hms_reply_free (our Drop).
        unsafe {
            let p = sys::hms_reply_data(self.raw.as_ptr()) as *const u8;
            let n = sys::hms_reply_size(self.raw.as_ptr());
            if p.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(p, n)
            }
        }
    }
}

impl Deref for RawReply<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data()
    }
}

impl AsRef<[u8]> for RawReply<'_> {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl Drop for RawReply<'_> {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the reply and free it once.
        unsafe { sys::hms_reply_free(&mut p) };
    }
}

impl std::fmt::Debug for RawReply<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawReply").field("len", &self.data().len()).finish()
    }
}
