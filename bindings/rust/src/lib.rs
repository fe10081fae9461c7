//! Rust binding of HMS-FFI: calls, services and topics on one machine through the `hms-ffid`
//! broker, at shared-memory speed, over the stable C ABI of `libhmsffi.so.1`
//! (`hms/ffi/hms_ffi.h`).
//!
//! Two levels. The JSON level: a call names a service, a version range and a method and passes
//! JSON; the library builds the Cap'n Proto message from it in place in the shared-memory ring,
//! with the schema the service registered, and turns the reply back into JSON
//! (`docs/contracts.md` has the mapping: 64-bit integers are decimal strings, `Data` is base64,
//! enums are names). JSON goes in as `&str` and comes out as `String`; parse it with the crate
//! you like. The raw level: the caller writes one Cap'n Proto segment straight into loaned ring
//! memory (`&mut [u8]`) and reads the reply in place (`&[u8]`), zero-copy both ways; build and
//! read the segments with a Cap'n Proto library (e.g. Debian's `librust-capnp-dev`).
//!
//! ```no_run
//! use hms_ffi::{Client, Code, Options};
//!
//! fn main() -> hms_ffi::Result<()> {
//!     let client = Client::connect(&Options::default())?;
//!     let debate = client.bind("hms.cdf.debate", "^2.0")?;
//!     match debate.call("evaluatePolicy", r#"{"policyId":"records.release","maxRounds":3}"#) {
//!         Ok(json) => println!("{}", json),
//!         Err(e) if e.code() == Code::NotFound => eprintln!("no such policy: {:?}", e.details()),
//!         Err(e) => return Err(e),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! - Calls: [`Client::bind`] → [`Stub::call`] / [`Stub::call_with`] ([`CallOptions`]: deadline,
//!   traceparent), [`Stub::call_oneway`], [`Stub::call_async`] → [`Future`] (wait, poll, fd,
//!   cancel), [`Stub::open_stream`] → [`Stream`] (an iterator); raw: [`Stub::loan_raw`] →
//!   [`Loan`] → [`Loan::send`] → [`RawReply`], or [`Stub::call_raw`].
//! - Serving: [`Client::serve`] → [`Service`]; [`Service::next`] → [`Request`], answered with
//!   [`Request::reply_json`] or [`Request::reply_error`]; or [`Service::run`] with a closure;
//!   raw: [`Request::params_raw`] → [`RawParams`], [`Request::reply_raw`].
//! - Topics: [`Client::advertise`] → [`Publisher`]; [`Client::subscribe`] → [`Subscription`].
//! - Errors: every fallible call returns [`Result`]; an [`Error`] has a gRPC [`Code`], a
//!   message, the id of the service that returned it ([`Error::source`]) and details.
//!
//! Threads: [`Client`], [`Stub`] and [`Service`] are `Send + Sync` (a stub makes one call at a
//! time; others wait their turn); [`Future`], [`Stream`], [`Request`], [`Publisher`] and
//! [`Subscription`] are `Send`; a raw [`Loan`] and [`RawReply`] borrow their stub mutably and
//! stay on their thread. The library never calls into Rust from a thread of its own.
//! Functions documented BLOCKING wait for the broker, a peer or a deadline: in async code, run
//! them on a blocking thread, or wait on [`Future::fd`] / [`Service::fd`].
//!
//! Every handle is freed by `Drop`. A handle made by a client that was dropped answers
//! `UNAVAILABLE`; a process forked from one that connected gets `FAILED_PRECONDITION` from the
//! parent's handles and must connect anew.
//!
//! Linking: `build.rs` links `libhmsffi.so` from `$HMS_FFI_LIB_DIR` (default: the tree's
//! `build/release/libclient`) and sets an rpath to it for this crate's tests and examples.
#![warn(missing_docs)]

mod call;
mod client;
mod error;
mod pubsub;
mod serve;
pub mod sys;

pub use call::{CallOptions, Future, Loan, RawReply, Stream, Stub};
pub use client::{Client, Options, Transport, WaitMode};
pub use error::{Code, Error, Result};
pub use pubsub::{Publisher, RawMessage, Subscription, TopicLoan};
pub use serve::{Caller, RawParams, Request, Service, ServiceOptions};

/// The ABI version of the `libhmsffi` loaded: `(major, minor)`. This crate needs major
/// [`sys::HMS_ABI_VERSION_MAJOR`]; [`Client::connect`] checks it.
pub fn abi_version() -> (u32, u32) {
    // SAFETY: a plain function without arguments.
    let v = unsafe { sys::hms_abi_version() };
    (v >> 16, v & 0xffff)
}

#[cfg(test)]
mod thread_bounds {
    use super::*;

    fn send<T: Send>() {}
    fn sync<T: Sync>() {}

    #[test]
    fn handles_are_send_and_sync_where_the_header_allows() {
        send::<Client>();
        sync::<Client>();
        send::<Stub>();
        sync::<Stub>();
        send::<Service>();
        sync::<Service>();
        send::<Future>();
        send::<Stream>();
        send::<Request>();
        send::<Publisher>();
        send::<Subscription>();
        send::<Error>();
        sync::<Error>();
    }
}
