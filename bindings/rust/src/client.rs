//! [`Client`]: a connection to the broker, and what it makes (stubs, services, topics).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::call::Stub;
use crate::error::{check, take_string, Code, Error, Result};
use crate::pubsub::{Publisher, Subscription};
use crate::serve::{Service, ServiceOptions};
use crate::sys;

/// How a client's channels carry their calls (`docs/transports.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Transport {
    /// Shared memory where both ends can map it, else a Unix socket; defers to
    /// `$HMS_FFI_TRANSPORT` when that is set.
    #[default]
    Auto,
    /// Shared memory only: `connect` fails with `FAILED_PRECONDITION` where it cannot be mapped.
    SharedMemory,
    /// Unix sockets only: nothing is mapped.
    Socket,
}

/// How a client waits for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WaitMode {
    /// Poll briefly, then sleep.
    #[default]
    Adaptive,
    /// Poll until the deadline: lowest latency, burns a core.
    Spin,
    /// Sleep at once.
    Blocking,
}

/// How to connect: [`Options::default()`] connects to the socket `$HMS_FFI_SOCKET` or the
/// per-user default, with a 30 s default deadline.
///
/// Fields are public; the methods of the same names set them in a chain:
///
/// ```no_run
/// use std::time::Duration;
/// let options = hms_ffi::Options::new()
///     .socket_path("/tmp/hms-ffi-demo/broker.sock")
///     .name("my-tool")
///     .transport(hms_ffi::Transport::Socket)
///     .default_timeout(Duration::from_secs(5));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The broker's socket; `None`: `$HMS_FFI_SOCKET`, else the per-user default.
    pub socket_path: Option<PathBuf>,
    /// Shown in the registry and the broker's log; `None`: `"<program>[<pid>]"`.
    pub name: Option<String>,
    /// Shared memory, sockets, or whichever works.
    pub transport: Transport,
    /// How calls wait for their replies.
    pub wait_mode: WaitMode,
    /// The deadline of a call that sets none (default 30 s).
    pub default_timeout: Duration,
    /// Reconnect to a broker that restarted and register the services again (default `true`).
    pub reconnect: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            socket_path: None,
            name: None,
            transport: Transport::Auto,
            wait_mode: WaitMode::Adaptive,
            default_timeout: Duration::from_secs(30),
            reconnect: true,
        }
    }
}

impl Options {
    /// The defaults (same as [`Options::default`]).
    pub fn new() -> Options {
        Options::default()
    }
    /// Sets [`Options::socket_path`].
    pub fn socket_path(mut self, path: impl Into<PathBuf>) -> Options {
        self.socket_path = Some(path.into());
        self
    }
    /// Sets [`Options::name`].
    pub fn name(mut self, name: impl Into<String>) -> Options {
        self.name = Some(name.into());
        self
    }
    /// Sets [`Options::transport`].
    pub fn transport(mut self, transport: Transport) -> Options {
        self.transport = transport;
        self
    }
    /// Sets [`Options::wait_mode`].
    pub fn wait_mode(mut self, mode: WaitMode) -> Options {
        self.wait_mode = mode;
        self
    }
    /// Sets [`Options::default_timeout`].
    pub fn default_timeout(mut self, timeout: Duration) -> Options {
        self.default_timeout = timeout;
        self
    }
    /// Sets [`Options::reconnect`].
    pub fn reconnect(mut self, reconnect: bool) -> Options {
        self.reconnect = reconnect;
        self
    }
}

/// A connection to the broker (`hms_client_t`). Makes [`Stub`]s to call services, serves
/// [`Service`]s, and publishes and subscribes to topics.
///
/// Dropping it closes the connection: its services leave the registry, and the stubs, services
/// and futures made from it that are still alive answer `UNAVAILABLE` from then on (they stay
/// safe to use and to drop). Dropping it waits until no raw view of its services' requests
/// ([`crate::RawParams`]) is alive: never drop it on a thread that holds one.
///
/// `Send + Sync`: the C ABI lets every handle be used from any thread.
#[derive(Debug)]
pub struct Client {
    raw: NonNull<sys::hms_client_t>,
    shared: Arc<Shared>,
}

/// What a client shares with the services it serves: the raw views into requests' ring memory
/// that are alive, and whether something is making the library let go of that memory.
///
/// A view ([`crate::RawParams`], the closure of [`crate::Request::reply_raw`]) is counted while
/// it lives; whatever makes the library let go of taken requests ([`Service::stop`], dropping a
/// [`Service`] or this client) waits until none is alive, and no view starts meanwhile. Views
/// never wait for each other (a thread may hold several), unlike a `RwLock`'s nested reads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<Views>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Views {
    alive: usize,
    releasing: bool,
}

/// A raw view being alive ([`Shared::view`]).
pub(crate) struct ViewGuard<'a>(&'a Shared);

/// Requests being let go of ([`Shared::release`]).
pub(crate) struct ReleaseGuard<'a>(&'a Shared);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Views> {
        // Only counters are guarded: a poisoned lock is as good as a clean one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, g: MutexGuard<'a, Views>) -> MutexGuard<'a, Views> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a raw view; waits while requests are being let go of.
    pub(crate) fn view(&self) -> ViewGuard<'_> {
        let mut g = self.lock();
        while g.releasing {
            g = self.wait(g);
        }
        g.alive += 1;
        ViewGuard(self)
    }

    /// Waits until no raw view is alive, and keeps new ones from starting until dropped.
    pub(crate) fn release(&self) -> ReleaseGuard<'_> {
        let mut g = self.lock();
        while g.releasing || g.alive > 0 {
            g = self.wait(g);
        }
        g.releasing = true;
        ReleaseGuard(self)
    }
}

impl Drop for ViewGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.alive -= 1;
        if g.alive == 0 {
            self.0.changed.notify_all();
        }
    }
}

impl Drop for ReleaseGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().releasing = false;
        self.0.changed.notify_all();
    }
}

// SAFETY: hms_ffi.h: "Handles may be used from any thread."
unsafe impl Send for Client {}
unsafe impl Sync for Client {}

impl Client {
    /// Connects to the broker. BLOCKING (bounded by 5 s).
    ///
    /// Fails with `UNAVAILABLE` when no broker serves the socket, `PERMISSION_DENIED` or
    /// `FAILED_PRECONDITION` when the broker or its socket's directory is not trusted, and
    /// `FAILED_PRECONDITION` when the library's ABI major version is not this crate's.
    pub fn connect(options: &Options) -> Result<Client> {
        // SAFETY: a plain function without arguments.
        let abi = unsafe { sys::hms_abi_version() };
        if abi >> 16 != sys::HMS_ABI_VERSION_MAJOR {
            return Err(Error::new(
                Code::FailedPrecondition,
                format!(
                    "libhmsffi has ABI {}.{}, this crate was written for {}.x; use a matching \
                     library (HMS_FFI_LIB_DIR) or crate",
                    abi >> 16,
                    abi & 0xffff,
                    sys::HMS_ABI_VERSION_MAJOR
                ),
            ));
        }
        let socket = match &options.socket_path {
            Some(p) => Some(path_cstring(p, "socket_path")?),
            None => None,
        };
        let name = match &options.name {
            Some(n) => Some(cstring(n, "name")?),
            None => None,
        };
        let mut o = std::mem::MaybeUninit::<sys::hms_client_options_t>::uninit();
        // SAFETY: init writes every field.
        let mut o = unsafe {
            sys::hms_client_options_init(o.as_mut_ptr());
            o.assume_init()
        };
        o.socket_path = socket.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        o.name = name.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        o.transport = match options.transport {
            Transport::Auto => sys::HMS_TRANSPORT_AUTO,
            Transport::SharedMemory => sys::HMS_TRANSPORT_SHM,
            Transport::Socket => sys::HMS_TRANSPORT_SOCKET,
        };
        o.wait_mode = match options.wait_mode {
            WaitMode::Adaptive => sys::HMS_WAIT_ADAPTIVE,
            WaitMode::Spin => sys::HMS_WAIT_SPIN,
            WaitMode::Blocking => sys::HMS_WAIT_BLOCKING,
        };
        // 0 would mean "the library's default"; a zero Duration asks for the shortest deadline.
        o.default_timeout_ms = duration_ms(options.default_timeout).max(1);
        o.reconnect = options.reconnect as i32;
        let mut out: *mut sys::hms_client_t = ptr::null_mut();
        let mut err: *mut sys::hms_error_t = ptr::null_mut();
        // SAFETY: o and the strings it points to live across the call; out and err are ours.
        let status = unsafe { sys::hms_client_connect(&o, &mut out, &mut err) };
        check(status, err)?;
        NonNull::new(out).map(|raw| Client { raw, shared: Arc::new(Shared::default()) }).ok_or_else(
            || Error::new(Code::Internal, "hms_client_connect returned OK and no client"),
        )
    }

    /// The client's id in the broker.
    pub fn id(&self) -> u64 {
        // SAFETY: a live handle.
        unsafe { sys::hms_client_id(self.raw.as_ptr()) }
    }

    /// Whether the client maps shared memory (`false`: its channels run on Unix sockets).
    pub fn uses_shared_memory(&self) -> bool {
        // SAFETY: a live handle.
        unsafe { sys::hms_client_uses_shared_memory(self.raw.as_ptr()) != 0 }
    }

    /// The contract of `service_id` at exactly `version` (`"2.1.0"`) as JSON
    /// (`{"id","version","interface","methods":[{"name","ordinal","stream"}],...}`). BLOCKING (a
    /// round trip to the broker).
    pub fn contract_json(&self, service_id: &str, version: &str) -> Result<String> {
        let id = cstring(service_id, "service_id")?;
        let v = cstring(version, "version")?;
        let mut json: *mut std::os::raw::c_char = ptr::null_mut();
        let mut len = 0usize;
        let mut err = ptr::null_mut();
        // SAFETY: live handle and strings; out-pointers are ours.
        let status = unsafe {
            sys::hms_client_contract_json(
                self.raw.as_ptr(),
                id.as_ptr(),
                v.as_ptr(),
                &mut json,
                &mut len,
                &mut err,
            )
        };
        check(status, err)?;
        // SAFETY: the library's string of len bytes.
        Ok(unsafe { take_string(json, len) })
    }

    /// A stub on the highest live version of `service_id` within `range` (`"^2.1"`, `"~1.2"`,
    /// `"*"` for any). BLOCKING (round trips to the broker). `NOT_FOUND` naming what is live when
    /// no version fits.
    pub fn bind(&self, service_id: &str, range: &str) -> Result<Stub> {
        let id = cstring(service_id, "service_id")?;
        let r = cstring(range, "range")?;
        let mut out = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: live handle and strings; out-pointers are ours.
        let status = unsafe {
            sys::hms_client_bind(self.raw.as_ptr(), id.as_ptr(), r.as_ptr(), &mut out, &mut err)
        };
        check(status, err)?;
        Stub::from_raw(out)
    }

    /// Registers `service_id` at `version` (`"2.1.0"`) with the contract of the interface
    /// `interface_name` (`"DebateService"`) of the Cap'n Proto schema file `schema_file`, and
    /// serves it: requests wait until [`Service::next`] (or [`Service::run`]) takes them.
    /// BLOCKING (a round trip to the broker).
    ///
    /// The broker checks the contract: `FAILED_PRECONDITION` for an incompatible change of a
    /// contract it knows at the same major version, `INVALID_ARGUMENT` for an incomplete one.
    pub fn serve(
        &self,
        service_id: &str,
        version: &str,
        schema_file: impl AsRef<Path>,
        interface_name: &str,
        options: &ServiceOptions,
    ) -> Result<Service> {
        let id = cstring(service_id, "service_id")?;
        let v = cstring(version, "version")?;
        let schema = path_cstring(schema_file.as_ref(), "schema_file")?;
        let iface = cstring(interface_name, "interface_name")?;
        let display = opt_cstring(options.display_name.as_deref(), "display_name")?;
        let description = opt_cstring(options.description.as_deref(), "description")?;
        let import_path = opt_cstring(options.import_path.as_deref(), "import_path")?;
        let streams = if options.stream_methods.is_empty() {
            None
        } else {
            Some(cstring(&options.stream_methods.join(","), "stream_methods")?)
        };
        let mut o = std::mem::MaybeUninit::<sys::hms_service_options_t>::uninit();
        // SAFETY: init writes every field.
        let mut o = unsafe {
            sys::hms_service_options_init(o.as_mut_ptr());
            o.assume_init()
        };
        if let Some(d) = &display {
            o.display_name = d.as_ptr();
        }
        if let Some(d) = &description {
            o.description = d.as_ptr();
        }
        if let Some(p) = &import_path {
            o.import_path = p.as_ptr();
        }
        if let Some(s) = &streams {
            o.stream_methods = s.as_ptr();
        }
        if let Some(n) = options.ring_bytes {
            o.ring_bytes = n;
        }
        if let Some(n) = options.concurrency {
            o.concurrency = n;
        }
        let mut out = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: live handle; o and every string live across the call.
        let status = unsafe {
            sys::hms_client_serve(
                self.raw.as_ptr(),
                id.as_ptr(),
                v.as_ptr(),
                schema.as_ptr(),
                iface.as_ptr(),
                &o,
                &mut out,
                &mut err,
            )
        };
        check(status, err)?;
        Service::from_raw(out, service_id, Arc::clone(&self.shared))
    }

    /// Becomes the one publisher of `topic_id`, whose messages are the struct `type_name`
    /// (`"Tick"`, `"Outer.Inner"`) of the schema file `schema_file`. `slots`: messages the log
    /// keeps, a power of two (0: 256). BLOCKING (round trips to the broker).
    pub fn advertise(
        &self,
        topic_id: &str,
        schema_file: impl AsRef<Path>,
        type_name: &str,
        slots: u32,
    ) -> Result<Publisher> {
        let schema = path_cstring(schema_file.as_ref(), "schema_file")?;
        let ty = cstring(type_name, "type_name")?;
        self.advertise_raw(topic_id, schema.as_ptr(), ty.as_ptr(), slots)
    }

    /// Becomes the publisher of `topic_id` with the type an earlier publisher advertised in this
    /// broker's life (a publisher that took over after a restart of its process). BLOCKING.
    pub fn advertise_known(&self, topic_id: &str, slots: u32) -> Result<Publisher> {
        self.advertise_raw(topic_id, ptr::null(), ptr::null(), slots)
    }

    fn advertise_raw(
        &self,
        topic_id: &str,
        schema: *const std::os::raw::c_char,
        ty: *const std::os::raw::c_char,
        slots: u32,
    ) -> Result<Publisher> {
        let topic = cstring(topic_id, "topic_id")?;
        let mut out = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: live handle; the strings live across the call (the caller keeps them).
        let status = unsafe {
            sys::hms_client_advertise_json(
                self.raw.as_ptr(),
                topic.as_ptr(),
                schema,
                ty,
                slots,
                &mut out,
                &mut err,
            )
        };
        check(status, err)?;
        Publisher::from_raw(out)
    }

    /// Subscribes to `topic_id` from the next message on, waiting up to `wait` for a publisher
    /// to advertise it. BLOCKING up to `wait`.
    pub fn subscribe(&self, topic_id: &str, wait: Duration) -> Result<Subscription> {
        let topic = cstring(topic_id, "topic_id")?;
        let wait_ms = duration_ms(wait);
        let mut out = ptr::null_mut();
        let mut err = ptr::null_mut();
        // SAFETY: live handle and string; out-pointers are ours.
        let status = unsafe {
            sys::hms_client_subscribe_json(
                self.raw.as_ptr(),
                topic.as_ptr(),
                wait_ms,
                &mut out,
                &mut err,
            )
        };
        check(status, err)?;
        Subscription::from_raw(out)
    }

    /// The raw handle, for calls into [`crate::sys`]; it stays owned by this client.
    pub fn as_raw(&self) -> *mut sys::hms_client_t {
        self.raw.as_ptr()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Freeing the client lets go of its services' taken requests: not under a raw view.
        let _no_raw_views = self.shared.release();
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle and free it once.
        unsafe { sys::hms_client_free(&mut p) };
    }
}

/// A `CString` of an argument, or `INVALID_ARGUMENT` naming it when it holds a NUL byte.
pub(crate) fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::nul_in(what))
}

pub(crate) fn opt_cstring(s: Option<&str>, what: &str) -> Result<Option<CString>> {
    s.map(|s| cstring(s, what)).transpose()
}

pub(crate) fn path_cstring(p: &Path, what: &str) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::nul_in(what))
}

/// The longest bound this crate passes to the library: 10^18 ns, about 31.7 years. The library
/// computes deadlines as now + timeout, which overflows for values near `i64::MAX` (a wait of
/// `i64::MAX` ns returns at once), so longer durations are clamped to it, or, where the C ABI has
/// an unbounded wait (-1), mean that.
pub(crate) const MAX_BOUND_NS: i64 = 1_000_000_000_000_000_000;

/// A deadline as the C ABI's nanoseconds, at most [`MAX_BOUND_NS`].
pub(crate) fn duration_ns(d: Duration) -> i64 {
    d.as_nanos().min(MAX_BOUND_NS as u128) as i64
}

/// A deadline as the C ABI's milliseconds, at most [`MAX_BOUND_NS`].
pub(crate) fn duration_ms(d: Duration) -> i64 {
    d.as_millis().min((MAX_BOUND_NS / 1_000_000) as u128) as i64
}

/// The bound of a wait as the C ABI's nanoseconds: -1 (no bound) from [`MAX_BOUND_NS`] on.
pub(crate) fn wait_ns(d: Duration) -> i64 {
    let ns = d.as_nanos();
    if ns >= MAX_BOUND_NS as u128 {
        -1
    } else {
        ns as i64
    }
}
