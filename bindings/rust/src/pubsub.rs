//! Publish/subscribe at the JSON level: [`Publisher`] and [`Subscription`].

use std::os::raw::c_char;
use std::ptr::{self, NonNull};
use std::time::Duration;

use crate::client::wait_ns;
use crate::error::{check, take_string, Code, Error, Result};
use crate::sys;

/// The one publisher of a topic (`hms_publisher_t`), from [`crate::Client::advertise`].
/// Dropping it leaves the topic: subscribers read what is left, then get `UNAVAILABLE`. `Send`.
#[derive(Debug)]
pub struct Publisher {
    raw: NonNull<sys::hms_publisher_t>,
}

// SAFETY: hms_ffi.h: handles may be used from any thread. Not Sync: a topic has one writer.
unsafe impl Send for Publisher {}

impl Publisher {
    pub(crate) fn from_raw(raw: *mut sys::hms_publisher_t) -> Result<Publisher> {
        NonNull::new(raw).map(|raw| Publisher { raw }).ok_or_else(|| {
            Error::new(Code::Internal, "hms_client_advertise_json returned OK and no publisher")
        })
    }

    /// Publishes one message (a JSON object of the topic's type), built in place in the log.
    /// May block while a subscriber falls behind (BLOCKING). `INVALID_ARGUMENT` for JSON that
    /// does not fit the type.
    pub fn publish(&self, message: &str) -> Result<()> {
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; the message is passed with its length.
        let status = unsafe {
            sys::hms_publisher_publish_json(
                self.raw.as_ptr(),
                message.as_ptr() as *const c_char,
                message.len(),
                &mut err,
            )
        };
        check(status, err)
    }

    /// How many subscribers the topic has now.
    pub fn subscribers(&self) -> usize {
        // SAFETY: a live handle.
        unsafe { sys::hms_publisher_subscribers(self.raw.as_ptr()) }
    }

    /// The raw handle, for calls into [`crate::sys`]; it stays owned by this publisher.
    pub fn as_raw(&self) -> *mut sys::hms_publisher_t {
        self.raw.as_ptr()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle and free it once.
        unsafe { sys::hms_publisher_free(&mut p) };
    }
}

/// A subscription to a topic (`hms_subscription_t`), from [`crate::Client::subscribe`]: its
/// messages in order, from the one after it subscribed. `Send`.
#[derive(Debug)]
pub struct Subscription {
    raw: NonNull<sys::hms_subscription_t>,
}

// SAFETY: hms_ffi.h: handles may be used from any thread. Not Sync: one reader.
unsafe impl Send for Subscription {}

impl Subscription {
    pub(crate) fn from_raw(raw: *mut sys::hms_subscription_t) -> Result<Subscription> {
        NonNull::new(raw).map(|raw| Subscription { raw }).ok_or_else(|| {
            Error::new(Code::Internal, "hms_client_subscribe_json returned OK and no subscription")
        })
    }

    /// The next message as JSON with its sequence number (from 1), waiting up to `timeout`:
    /// `Ok(None)` when none came in time, `Err(UNAVAILABLE)` once the publisher left and every
    /// message was read. BLOCKING up to `timeout` (`Duration::MAX`: a year, the library's
    /// longest wait).
    pub fn next(&mut self, timeout: Duration) -> Result<Option<(u64, String)>> {
        let mut msg: *mut c_char = ptr::null_mut();
        let mut len = 0usize;
        let mut seq = 0u64;
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; out-pointers are ours.
        let status = unsafe {
            sys::hms_subscription_next_json(
                self.raw.as_ptr(),
                wait_ns(timeout),
                &mut msg,
                &mut len,
                &mut seq,
                &mut err,
            )
        };
        match check(status, err) {
            // SAFETY: the library's string of len bytes.
            Ok(()) => Ok(Some((seq, unsafe { take_string(msg, len) }))),
            Err(e) if e.code() == Code::DeadlineExceeded => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The raw handle, for calls into [`crate::sys`]; it stays owned by this subscription.
    pub fn as_raw(&self) -> *mut sys::hms_subscription_t {
        self.raw.as_ptr()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut p = self.raw.as_ptr();
        // SAFETY: we own the handle and free it once.
        unsafe { sys::hms_subscription_free(&mut p) };
    }
}
