//! The C ABI of `libhmsffi.so.1` as declared in `hms/ffi/hms_ffi.h`, one to one.
//!
//! Everything here is `unsafe` and follows the header's rules: handles are opaque heap objects
//! freed by their `hms_*_free(&mut ptr)`, which sets the pointer to NULL; every fallible function
//! returns a status code (`HMS_OK` or gRPC's numbering) and fills `*err` on failure; strings that
//! come out are freed with [`hms_string_free`]. The safe API of this crate wraps all of it; use
//! this module only for what the safe API does not offer.
#![allow(non_camel_case_types)]
#![allow(missing_docs)]

use std::os::raw::{c_char, c_int, c_void};

/// The ABI version this module declares (`HMS_ABI_VERSION_MAJOR`, `HMS_ABI_VERSION_MINOR`).
pub const HMS_ABI_VERSION_MAJOR: u32 = 1;
pub const HMS_ABI_VERSION_MINOR: u32 = 0;

// ---- Status and errors ------------------------------------------------------------------------

pub type hms_status_t = c_int;
pub const HMS_OK: c_int = 0;
pub const HMS_CANCELLED: c_int = 1;
pub const HMS_UNKNOWN: c_int = 2;
pub const HMS_INVALID_ARGUMENT: c_int = 3;
pub const HMS_DEADLINE_EXCEEDED: c_int = 4;
pub const HMS_NOT_FOUND: c_int = 5;
pub const HMS_ALREADY_EXISTS: c_int = 6;
pub const HMS_PERMISSION_DENIED: c_int = 7;
pub const HMS_RESOURCE_EXHAUSTED: c_int = 8;
pub const HMS_FAILED_PRECONDITION: c_int = 9;
pub const HMS_ABORTED: c_int = 10;
pub const HMS_OUT_OF_RANGE: c_int = 11;
pub const HMS_UNIMPLEMENTED: c_int = 12;
pub const HMS_INTERNAL: c_int = 13;
pub const HMS_UNAVAILABLE: c_int = 14;
pub const HMS_DATA_LOSS: c_int = 15;
pub const HMS_UNAUTHENTICATED: c_int = 16;

/// Opaque: an error's code, message, source and details.
#[repr(C)]
pub struct hms_error_t {
    _private: [u8; 0],
}

// ---- Client -----------------------------------------------------------------------------------

#[repr(C)]
pub struct hms_client_t {
    _private: [u8; 0],
}

/// `hms_transport_t` (a C enum: `int` sized).
pub type hms_transport_t = c_int;
pub const HMS_TRANSPORT_AUTO: hms_transport_t = 0;
pub const HMS_TRANSPORT_SHM: hms_transport_t = 1;
pub const HMS_TRANSPORT_SOCKET: hms_transport_t = 2;

/// `hms_wait_mode_t` (a C enum: `int` sized).
pub type hms_wait_mode_t = c_int;
pub const HMS_WAIT_ADAPTIVE: hms_wait_mode_t = 0;
pub const HMS_WAIT_SPIN: hms_wait_mode_t = 1;
pub const HMS_WAIT_BLOCKING: hms_wait_mode_t = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hms_client_options_t {
    pub socket_path: *const c_char,
    pub name: *const c_char,
    pub transport: hms_transport_t,
    pub wait_mode: hms_wait_mode_t,
    pub default_timeout_ms: i64,
    pub reconnect: c_int,
}

// ---- Calls ------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hms_call_options_t {
    pub timeout_ns: i64,
    pub traceparent: *const c_char,
    pub pretty: c_int,
}

#[repr(C)]
pub struct hms_stub_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct hms_future_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct hms_stream_t {
    _private: [u8; 0],
}

/// Opaque: the reply of a raw call, read in place in the ring until freed.
#[repr(C)]
pub struct hms_reply_t {
    _private: [u8; 0],
}

// ---- Serving ----------------------------------------------------------------------------------

#[repr(C)]
pub struct hms_service_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct hms_request_t {
    _private: [u8; 0],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hms_service_options_t {
    pub display_name: *const c_char,
    pub description: *const c_char,
    pub ring_bytes: u32,
    pub concurrency: u32,
    pub import_path: *const c_char,
    pub stream_methods: *const c_char,
}

// ---- Topics -----------------------------------------------------------------------------------

#[repr(C)]
pub struct hms_publisher_t {
    _private: [u8; 0],
}
#[repr(C)]
pub struct hms_subscription_t {
    _private: [u8; 0],
}

// The library is linked by build.rs (`-l dylib=hmsffi`, from HMS_FFI_LIB_DIR).
extern "C" {
    pub fn hms_abi_version() -> u32;

    pub fn hms_status_name(code: c_int) -> *const c_char;

    pub fn hms_error_code(err: *const hms_error_t) -> c_int;
    pub fn hms_error_message(err: *const hms_error_t) -> *const c_char;
    pub fn hms_error_source(err: *const hms_error_t) -> *const c_char;
    pub fn hms_error_detail_count(err: *const hms_error_t) -> usize;
    pub fn hms_error_detail(
        err: *const hms_error_t,
        i: usize,
        key: *mut *const c_char,
        value: *mut *const c_char,
    ) -> c_int;
    pub fn hms_error_details_json(err: *const hms_error_t) -> *const c_char;
    pub fn hms_error_free(err: *mut *mut hms_error_t);

    pub fn hms_string_free(s: *mut *mut c_char);

    // Client
    pub fn hms_client_options_init(options: *mut hms_client_options_t);
    /// BLOCKING (bounded by 5 s).
    pub fn hms_client_connect(
        options: *const hms_client_options_t,
        out: *mut *mut hms_client_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_client_free(client: *mut *mut hms_client_t);
    pub fn hms_client_id(client: *const hms_client_t) -> u64;
    pub fn hms_client_uses_shared_memory(client: *const hms_client_t) -> c_int;
    /// BLOCKING (a round trip to the broker).
    pub fn hms_client_contract_json(
        client: *mut hms_client_t,
        service_id: *const c_char,
        version: *const c_char,
        json: *mut *mut c_char,
        json_len: *mut usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;

    // Calls
    pub fn hms_call_options_init(options: *mut hms_call_options_t);
    /// BLOCKING (round trips to the broker).
    pub fn hms_client_bind(
        client: *mut hms_client_t,
        service_id: *const c_char,
        range: *const c_char,
        out: *mut *mut hms_stub_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_stub_free(stub: *mut *mut hms_stub_t);
    pub fn hms_stub_service_id(stub: *const hms_stub_t) -> *const c_char;
    pub fn hms_stub_service_version(stub: *const hms_stub_t) -> *const c_char;
    /// BLOCKING.
    pub fn hms_stub_call_json(
        stub: *mut hms_stub_t,
        method: *const c_char,
        params: *const c_char,
        params_len: usize,
        options: *const hms_call_options_t,
        result: *mut *mut c_char,
        result_len: *mut usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING while the service's ring is full.
    pub fn hms_stub_call_oneway_json(
        stub: *mut hms_stub_t,
        method: *const c_char,
        params: *const c_char,
        params_len: usize,
        options: *const hms_call_options_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING while the ring is full.
    pub fn hms_stub_call_async_json(
        stub: *mut hms_stub_t,
        method: *const c_char,
        params: *const c_char,
        params_len: usize,
        options: *const hms_call_options_t,
        out: *mut *mut hms_future_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;

    pub fn hms_future_poll(future: *const hms_future_t) -> c_int;
    /// BLOCKING up to `timeout_ns` (-1: the call's deadline).
    pub fn hms_future_wait(future: *mut hms_future_t, timeout_ns: i64) -> c_int;
    pub fn hms_future_fd(future: *mut hms_future_t) -> c_int;
    pub fn hms_future_cancel(future: *mut hms_future_t) -> c_int;
    /// BLOCKING until the result is there. Once.
    pub fn hms_future_result_json(
        future: *mut hms_future_t,
        result: *mut *mut c_char,
        result_len: *mut usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_future_free(future: *mut *mut hms_future_t);

    pub fn hms_stub_open_stream_json(
        stub: *mut hms_stub_t,
        method: *const c_char,
        params: *const c_char,
        params_len: usize,
        options: *const hms_call_options_t,
        out: *mut *mut hms_stream_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING.
    pub fn hms_stream_next_json(
        stream: *mut hms_stream_t,
        item: *mut *mut c_char,
        item_len: *mut usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_stream_cancel(stream: *mut hms_stream_t) -> c_int;
    pub fn hms_stream_free(stream: *mut *mut hms_stream_t);

    // Calls: the raw level
    /// May block while the ring is full (BLOCKING). Holds the stub until sent or abandoned.
    pub fn hms_stub_loan_raw(
        stub: *mut hms_stub_t,
        method: *const c_char,
        options: *const hms_call_options_t,
        data: *mut *mut c_void,
        capacity: *mut usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING: sends the first `size` bytes of the loan and waits for the reply.
    pub fn hms_stub_send_raw(
        stub: *mut hms_stub_t,
        size: usize,
        reply: *mut *mut hms_reply_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_stub_abandon_raw(stub: *mut hms_stub_t);
    pub fn hms_reply_data(reply: *const hms_reply_t) -> *const c_void;
    pub fn hms_reply_size(reply: *const hms_reply_t) -> usize;
    pub fn hms_reply_free(reply: *mut *mut hms_reply_t);

    // Serving (pull)
    pub fn hms_service_options_init(options: *mut hms_service_options_t);
    /// BLOCKING (a round trip to the broker).
    pub fn hms_client_serve(
        client: *mut hms_client_t,
        service_id: *const c_char,
        version: *const c_char,
        schema_file: *const c_char,
        interface_name: *const c_char,
        options: *const hms_service_options_t,
        out: *mut *mut hms_service_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING up to `timeout_ns` (-1: until a request comes or the service stops).
    pub fn hms_service_next(
        service: *mut hms_service_t,
        timeout_ns: i64,
        out: *mut *mut hms_request_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_service_fd(service: *mut hms_service_t) -> c_int;
    pub fn hms_service_stop(service: *mut hms_service_t) -> c_int;
    pub fn hms_service_free(service: *mut *mut hms_service_t);

    pub fn hms_request_method(request: *const hms_request_t) -> *const c_char;
    pub fn hms_request_is_stream(request: *const hms_request_t) -> c_int;
    pub fn hms_request_caller_pid(request: *const hms_request_t) -> i32;
    pub fn hms_request_caller_uid(request: *const hms_request_t) -> u32;
    pub fn hms_request_caller_name(request: *const hms_request_t) -> *const c_char;
    /// Since ABI 1.1: the whole caller as one JSON object, valid while the request lives.
    pub fn hms_request_caller_json(request: *const hms_request_t) -> *const c_char;
    pub fn hms_request_time_left_ns(request: *const hms_request_t) -> i64;
    pub fn hms_request_traceparent(request: *const hms_request_t) -> *const c_char;
    pub fn hms_request_cancelled(request: *const hms_request_t) -> c_int;
    pub fn hms_request_params_json(
        request: *const hms_request_t,
        json: *mut *mut c_char,
        json_len: *mut usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_request_params_data(request: *const hms_request_t) -> *const c_void;
    pub fn hms_request_params_size(request: *const hms_request_t) -> usize;
    pub fn hms_request_loan_raw(
        request: *mut hms_request_t,
        data: *mut *mut c_void,
        capacity: *mut usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_request_reply_raw(
        request: *mut *mut hms_request_t,
        size: usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_request_reply_json(
        request: *mut *mut hms_request_t,
        results: *const c_char,
        results_len: usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_request_reply_error(
        request: *mut *mut hms_request_t,
        code: c_int,
        message: *const c_char,
        details_json: *const c_char,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING while the caller's ring is full.
    pub fn hms_request_stream_json(
        request: *mut hms_request_t,
        item: *const c_char,
        item_len: usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_request_free(request: *mut *mut hms_request_t);

    // Topics (JSON)
    /// BLOCKING (round trips).
    pub fn hms_client_advertise_json(
        client: *mut hms_client_t,
        topic_id: *const c_char,
        schema_file: *const c_char,
        type_name: *const c_char,
        slots: u32,
        out: *mut *mut hms_publisher_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING for a slow blocking subscriber.
    pub fn hms_publisher_publish_json(
        publisher: *mut hms_publisher_t,
        message: *const c_char,
        message_len: usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING like publishing.
    pub fn hms_publisher_loan_raw(
        publisher: *mut hms_publisher_t,
        data: *mut *mut c_void,
        capacity: *mut usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_publisher_publish_raw(
        publisher: *mut hms_publisher_t,
        size: usize,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_publisher_abandon_raw(publisher: *mut hms_publisher_t);
    pub fn hms_publisher_subscribers(publisher: *const hms_publisher_t) -> usize;
    pub fn hms_publisher_free(publisher: *mut *mut hms_publisher_t);

    /// BLOCKING up to `wait_ms` for a publisher.
    pub fn hms_client_subscribe_json(
        client: *mut hms_client_t,
        topic_id: *const c_char,
        wait_ms: i64,
        out: *mut *mut hms_subscription_t,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING up to `timeout_ns`.
    pub fn hms_subscription_next_json(
        subscription: *mut hms_subscription_t,
        timeout_ns: i64,
        message: *mut *mut c_char,
        message_len: *mut usize,
        sequence: *mut u64,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    /// BLOCKING up to `timeout_ns`; the segment is valid until the next call.
    pub fn hms_subscription_next_raw(
        subscription: *mut hms_subscription_t,
        timeout_ns: i64,
        data: *mut *const c_void,
        size: *mut usize,
        sequence: *mut u64,
        err: *mut *mut hms_error_t,
    ) -> c_int;
    pub fn hms_subscription_free(subscription: *mut *mut hms_subscription_t);
}
