//! Publish/subscribe: [`Publisher`] and [`Subscription`], JSON or raw (one Cap'n Proto segment
//! written or read in place in the topic's log).

use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};
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

    /// The raw level: the next message's slot in the log (zeroed), to write one Cap'n Proto
    /// segment into (root pointer at offset 0); [`TopicLoan::publish`] publishes it, dropping
    /// the loan gives the slot back. May block like [`Publisher::publish`] (BLOCKING).
    pub fn loan_raw(&mut self) -> Result<TopicLoan<'_>> {
        let mut data: *mut c_void = ptr::null_mut();
        let mut capacity = 0usize;
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; out-pointers are ours.
        let status = unsafe {
            sys::hms_publisher_loan_raw(self.raw.as_ptr(), &mut data, &mut capacity, &mut err)
        };
        check(status, err)?;
        let data = NonNull::new(data as *mut u8).ok_or_else(|| {
            Error::new(Code::Internal, "hms_publisher_loan_raw returned OK and no memory")
        })?;
        Ok(TopicLoan { publisher: self, data, capacity })
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

/// A message's slot in the log on loan ([`Publisher::loan_raw`]): write one segment, then
/// [`TopicLoan::publish`]. Dropped unpublished, the slot goes back and nothing is published.
#[derive(Debug)]
pub struct TopicLoan<'a> {
    publisher: &'a mut Publisher,
    data: NonNull<u8>,
    capacity: usize,
}

impl TopicLoan<'_> {
    /// The slot's bytes (zeroed).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `capacity` writable bytes of the log, ours until published or given back; the
        // publisher is borrowed mutably for as long as this loan lives.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.capacity) }
    }

    /// The slot as 64-bit words (Cap'n Proto's unit; the library loans 8-byte aligned memory).
    pub fn words_mut(&mut self) -> &mut [u64] {
        debug_assert_eq!(self.data.as_ptr() as usize % 8, 0);
        // SAFETY: as bytes_mut, aligned.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr() as *mut u64, self.capacity / 8) }
    }

    /// Publishes the first `size` bytes (a multiple of 8, at least 8) to every subscriber.
    pub fn publish(self, size: usize) -> Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        let mut err = ptr::null_mut();
        // SAFETY: a live publisher with this loan out.
        let status =
            unsafe { sys::hms_publisher_publish_raw(this.publisher.raw.as_ptr(), size, &mut err) };
        check(status, err)
    }
}

impl Drop for TopicLoan<'_> {
    fn drop(&mut self) {
        // SAFETY: a live publisher with this loan out.
        unsafe { sys::hms_publisher_abandon_raw(self.publisher.raw.as_ptr()) };
    }
}

/// A message read in place in the log ([`Subscription::next_raw`]); the subscription is
/// borrowed until it is dropped.
#[derive(Debug)]
pub struct RawMessage<'a> {
    /// Its sequence number (from 1).
    pub sequence: u64,
    data: &'a [u8],
    _subscription: PhantomData<&'a mut Subscription>,
}

impl RawMessage<'_> {
    /// The message's one segment (root pointer at offset 0).
    pub fn data(&self) -> &[u8] {
        self.data
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

    /// The raw level: the next message's one segment read in place, waiting up to `timeout`
    /// (`Ok(None)` when none came). BLOCKING up to `timeout`.
    pub fn next_raw(&mut self, timeout: Duration) -> Result<Option<RawMessage<'_>>> {
        let mut data: *const c_void = ptr::null();
        let mut size = 0usize;
        let mut seq = 0u64;
        let mut err = ptr::null_mut();
        // SAFETY: a live handle; out-pointers are ours.
        let status = unsafe {
            sys::hms_subscription_next_raw(
                self.raw.as_ptr(),
                wait_ns(timeout),
                &mut data,
                &mut size,
                &mut seq,
                &mut err,
            )
        };
        match check(status, err) {
            Ok(()) => Ok(Some(RawMessage {
                sequence: seq,
                // SAFETY: `size` bytes in the log, valid until the next call on this
                // subscription, which the borrow of `self` rules out meanwhile.
                data: unsafe { std::slice::from_raw_parts(data as *const u8, size) },
                _subscription: PhantomData,
            })),
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
