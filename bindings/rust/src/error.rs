//! [`Error`], [`Code`] and [`Result`]: the library's statuses as Rust values.

use std::ffi::CStr;
use std::fmt;
use std::os::raw::{c_char, c_int};
use std::ptr;

use crate::sys;

/// A status code: gRPC's numbering, as the C ABI's `hms_status_t` (the seed's §8.1).
///
/// `Display` prints the canonical name (`NOT_FOUND`), as every other language's binding and the
/// `hms-ffi` tool do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// Not an error (never the code of an [`Error`] this crate returns).
    Ok = 0,
    /// The caller cancelled the call.
    Cancelled = 1,
    /// An error without a better code.
    Unknown = 2,
    /// The request is malformed: bad JSON, a field that does not fit, a missing argument.
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// No such service, version, method target or resource.
    NotFound = 5,
    /// The resource exists already.
    AlreadyExists = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// A limit was reached (ring space, the broker's per-client limits).
    ResourceExhausted = 8,
    /// The system is not in the state the call needs (e.g. an incompatible contract).
    FailedPrecondition = 9,
    /// The operation was aborted (e.g. a stream the service ended).
    Aborted = 10,
    /// A value past its valid range.
    OutOfRange = 11,
    /// The method is not served.
    Unimplemented = 12,
    /// A bug: an invariant broke (on either side).
    Internal = 13,
    /// The peer or the broker is gone: retry later.
    Unavailable = 14,
    /// Data was lost or corrupted.
    DataLoss = 15,
    /// The caller is not authenticated.
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code of a number; [`Code::Unknown`] for a number outside gRPC's table.
    pub fn from_i32(code: i32) -> Code {
        if (0..17).contains(&code) {
            Code::ALL[code as usize]
        } else {
            Code::Unknown
        }
    }

    /// The number (`Code::NotFound.as_i32() == 5`).
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical name: `"NOT_FOUND"`, `"DEADLINE_EXCEEDED"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Code> for i32 {
    fn from(code: Code) -> i32 {
        code as i32
    }
}

/// An error from the library, the broker or the service called: a [`Code`], a message saying
/// what happened and what to do, the id of the service that returned it ([`Error::source`], empty
/// when the library or the broker did), and details as key/value pairs.
///
/// Services written in Rust build one with [`Error::new`] and [`Error::with_detail`] to answer a
/// request (see [`crate::Service::run`]).
///
/// Note: the inherent [`Error::source`] (the service id) shadows
/// [`std::error::Error::source`] in method-call syntax; this error has no underlying cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: Code,
    message: String,
    source: String,
    details: Vec<(String, String)>,
}

/// `std::result::Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with `code` and `message`, no source, no details.
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error { code, message: message.into(), source: String::new(), details: Vec::new() }
    }

    /// Adds a detail (e.g. `("field", "policyId")`), keeping the order they were added in.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Error {
        self.details.push((key.into(), value.into()));
        self
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// What happened and what to do.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The id of the service that returned the error (`"hms.test"`); `""` when the library or
    /// the broker did.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The details, as key/value pairs in the order the service added them.
    pub fn details(&self) -> &[(String, String)] {
        &self.details
    }

    /// The value of the detail `key`, if there is one.
    pub fn detail(&self, key: &str) -> Option<&str> {
        self.details.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The details as one JSON object of strings (`{"field":"policyId"}`; `{}` when none).
    pub fn details_json(&self) -> String {
        details_json(self.details.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// Builds the error of a failed C call from its status and its `hms_error_t` (which this
    /// frees). `err` may be NULL (the library filled none): the message is then the code's name.
    pub(crate) fn from_raw(status: c_int, mut err: *mut sys::hms_error_t) -> Error {
        let mut e = Error::new(Code::from_i32(status), String::new());
        if e.code == Code::Ok {
            // A failure must never read as success.
            e.code = Code::Unknown;
        }
        if err.is_null() {
            e.message = format!("{} (the library gave no message)", e.code.name());
            return e;
        }
        // SAFETY: err is a live hms_error_t the library handed us; its strings live until it is
        // freed below, and we copy them first.
        unsafe {
            let code = sys::hms_error_code(err);
            if code != 0 {
                e.code = Code::from_i32(code);
            }
            e.message = string_from(sys::hms_error_message(err));
            e.source = string_from(sys::hms_error_source(err));
            let n = sys::hms_error_detail_count(err);
            for i in 0..n {
                let mut k: *const c_char = ptr::null();
                let mut v: *const c_char = ptr::null();
                if sys::hms_error_detail(err, i, &mut k, &mut v) == 0 {
                    e.details.push((string_from(k), string_from(v)));
                }
            }
            sys::hms_error_free(&mut err);
        }
        e
    }

    /// An argument that cannot cross the C ABI (a string with a NUL byte in it).
    pub(crate) fn nul_in(what: &str) -> Error {
        Error::new(
            Code::InvalidArgument,
            format!("{} contains a NUL byte; the C ABI takes NUL-terminated strings", what),
        )
    }
}

impl fmt::Display for Error {
    /// `NOT_FOUND: message [source: hms.test] [key=value]`, as the C++ library's
    /// `Status::toString` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code.name())?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if !self.source.is_empty() {
            write!(f, " [source: {}]", self.source)?;
        }
        for (k, v) in &self.details {
            write!(f, " [{}={}]", k, v)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Code> for Error {
    /// An error with the code and no message.
    fn from(code: Code) -> Error {
        Error::new(code, String::new())
    }
}

/// Turns a C call's status into a `Result`, consuming `err` on failure.
pub(crate) fn check(status: c_int, err: *mut sys::hms_error_t) -> Result<()> {
    if status == sys::HMS_OK {
        if !err.is_null() {
            // Not expected (the header leaves *err alone on success), but never leak it.
            let mut err = err;
            // SAFETY: a live error handle from the library.
            unsafe { sys::hms_error_free(&mut err) };
        }
        Ok(())
    } else {
        Err(Error::from_raw(status, err))
    }
}

/// Copies a NUL-terminated C string (NULL: empty) into a `String`, replacing bytes that are not
/// UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that lives for the call.
pub(crate) unsafe fn string_from(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Takes a string the library returned (pointer and length), copies it and frees it.
///
/// # Safety
/// `p` is NULL or a string from this library of `len` bytes (plus the NUL), not yet freed.
pub(crate) unsafe fn take_string(mut p: *mut c_char, len: usize) -> String {
    if p.is_null() {
        return String::new();
    }
    let bytes = std::slice::from_raw_parts(p as *const u8, len);
    let s = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    sys::hms_string_free(&mut p);
    s
}

/// Writes `s` as a JSON string literal (with its quotes), escaping what JSON requires. NUL,
/// which no C string can carry, becomes U+FFFD.
pub(crate) fn json_quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\0' => out.push('\u{FFFD}'),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON object of strings from key/value pairs, in their order.
pub(crate) fn details_json<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_quote(k, &mut out);
        out.push(':');
        json_quote(v, &mut out);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_and_numbers_match_grpc() {
        assert_eq!(Code::NotFound.to_string(), "NOT_FOUND");
        assert_eq!(Code::from_i32(14), Code::Unavailable);
        assert_eq!(Code::from_i32(99), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(c.as_i32(), i as i32);
            assert_eq!(Code::from_i32(i as i32), *c);
        }
    }

    #[test]
    fn details_json_escapes_what_json_requires() {
        let j = details_json(vec![("a\"b", "c\\d\n\u{1}é"), ("k", "\0")]);
        assert_eq!(j, "{\"a\\\"b\":\"c\\\\d\\n\\u0001é\",\"k\":\"\u{FFFD}\"}");
        assert_eq!(details_json(Vec::<(&str, &str)>::new()), "{}");
    }

    #[test]
    fn display_reads_like_the_cpp_status() {
        let e = Error::new(Code::NotFound, "no policy 'x'").with_detail("policyId", "x");
        assert_eq!(e.to_string(), "NOT_FOUND: no policy 'x' [policyId=x]");
        assert_eq!(e.detail("policyId"), Some("x"));
        assert_eq!(e.details_json(), "{\"policyId\":\"x\"}");
    }
}
