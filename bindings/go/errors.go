package ffi

import (
	"context"
	"errors"
	"sort"
	"strings"
)

// Code is a status code with gRPC's numbering, as the C ABI's hms_status_t.
type Code int

// The codes, numbered as gRPC's. docs/errors.md says which part of HMS-FFI returns which.
const (
	CodeOK                 Code = 0
	CodeCancelled          Code = 1
	CodeUnknown            Code = 2
	CodeInvalidArgument    Code = 3
	CodeDeadlineExceeded   Code = 4
	CodeNotFound           Code = 5
	CodeAlreadyExists      Code = 6
	CodePermissionDenied   Code = 7
	CodeResourceExhausted  Code = 8
	CodeFailedPrecondition Code = 9
	CodeAborted            Code = 10
	CodeOutOfRange         Code = 11
	CodeUnimplemented      Code = 12
	CodeInternal           Code = 13
	CodeUnavailable        Code = 14
	CodeDataLoss           Code = 15
	CodeUnauthenticated    Code = 16
)

var codeNames = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
	"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

// String returns the code's name as gRPC spells it: "NOT_FOUND", "INVALID_ARGUMENT", ...
// ("UNKNOWN" for a number outside the table, as hms_status_name does).
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "UNKNOWN"
}

// Error is a failure reported by the library, the broker or a service: the status of the C
// ABI's hms_error_t. A handler returns one to answer with its code, message and details.
type Error struct {
	// Code is never CodeOK in an error that was returned.
	Code Code
	// Message says what happened and what to do.
	Message string
	// Source is the id of the service that returned the error; "" when the library, the broker
	// or this binding did.
	Source string
	// Details are key/value pairs, e.g. "field" -> "patientId"; nil when there are none.
	Details map[string]string

	cause error // what this binding wraps (ctx.Err(), ErrClosed, an encoding error), or nil
}

// Error formats the error as the C++ library's Status::toString does:
// "NOT_FOUND: no patient 'p-1' [source: hms.emr.patient] [resource_id=p-1]".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Code.String())
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Source != "" {
		b.WriteString(" [source: ")
		b.WriteString(e.Source)
		b.WriteString("]")
	}
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(" [")
		b.WriteString(k)
		b.WriteString("=")
		b.WriteString(e.Details[k])
		b.WriteString("]")
	}
	return b.String()
}

// Is reports whether target is the sentinel of e's code (ErrNotFound for CodeNotFound, ...),
// context.Canceled for CodeCancelled, or context.DeadlineExceeded for CodeDeadlineExceeded.
func (e *Error) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == CodeCancelled
	case context.DeadlineExceeded:
		return e.Code == CodeDeadlineExceeded
	}
	if t, ok := target.(*Error); ok && t.isSentinel() {
		return t.Code == e.Code
	}
	return false
}

// Unwrap returns what the binding wrapped: the context's error for a call its context ended,
// ErrClosed for a closed handle, the encoding/json error for a value that did not encode.
func (e *Error) Unwrap() error { return e.cause }

func (e *Error) isSentinel() bool {
	return e.Message == "" && e.Source == "" && e.Details == nil && e.cause == nil
}

// The sentinels, one per code, for errors.Is: errors.Is(err, ffi.ErrNotFound) is true for any
// *Error with CodeNotFound, whatever its message, source and details.
var (
	ErrCancelled          error = &Error{Code: CodeCancelled}
	ErrUnknown            error = &Error{Code: CodeUnknown}
	ErrInvalidArgument    error = &Error{Code: CodeInvalidArgument}
	ErrDeadlineExceeded   error = &Error{Code: CodeDeadlineExceeded}
	ErrNotFound           error = &Error{Code: CodeNotFound}
	ErrAlreadyExists      error = &Error{Code: CodeAlreadyExists}
	ErrPermissionDenied   error = &Error{Code: CodePermissionDenied}
	ErrResourceExhausted  error = &Error{Code: CodeResourceExhausted}
	ErrFailedPrecondition error = &Error{Code: CodeFailedPrecondition}
	ErrAborted            error = &Error{Code: CodeAborted}
	ErrOutOfRange         error = &Error{Code: CodeOutOfRange}
	ErrUnimplemented      error = &Error{Code: CodeUnimplemented}
	ErrInternal           error = &Error{Code: CodeInternal}
	ErrUnavailable        error = &Error{Code: CodeUnavailable}
	ErrDataLoss           error = &Error{Code: CodeDataLoss}
	ErrUnauthenticated    error = &Error{Code: CodeUnauthenticated}
)

// ErrClosed is wrapped (with CodeFailedPrecondition) by the error of a method called on a
// Client, Stub, Stream, Service, Publisher or Subscription after its Close.
var ErrClosed = errors.New("ffi: use of a closed handle")

// CodeOf returns the code of err: CodeOK for nil, the Code of an *Error in err's chain,
// CodeCancelled for context.Canceled, CodeDeadlineExceeded for context.DeadlineExceeded, else
// CodeUnknown.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.Canceled):
		return CodeCancelled
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	}
	return CodeUnknown
}

// contextError is the *Error of a call whose context ended: its code is the context's, and it
// wraps ctx.Err().
func contextError(ctxErr error, msg string) *Error {
	code := CodeCancelled
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		code = CodeDeadlineExceeded
	}
	if msg == "" {
		msg = ctxErr.Error()
	}
	return &Error{Code: code, Message: msg, cause: ctxErr}
}

func closedError(what string) *Error {
	return &Error{Code: CodeFailedPrecondition, Message: "ffi: the " + what + " is closed",
		cause: ErrClosed}
}

// encodingError is the error of a value encoding/json could not marshal or unmarshal.
func encodingError(code Code, what string, err error) *Error {
	return &Error{Code: code, Message: "ffi: " + what + ": " + err.Error(), cause: err}
}
