package ffi

/*
#cgo CFLAGS: -I${SRCDIR}/../../libclient/include
#cgo LDFLAGS: -lhmsffi
#include <stdlib.h>
#include "hms/ffi/hms_ffi.h"
*/
import "C"

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unsafe"
)

// ABIVersion returns the version of the C ABI of the libhmsffi this process runs with, as
// major<<16 | minor.
func ABIVersion() uint32 { return uint32(C.hms_abi_version()) }

// errorFromC turns a status code and the hms_error_t the library filled (or NULL) into an
// *Error, and frees the hms_error_t.
func errorFromC(rc C.int, cerr *C.hms_error_t) *Error {
	if cerr == nil {
		return &Error{Code: Code(rc), Message: C.GoString(C.hms_status_name(rc))}
	}
	defer C.hms_error_free(&cerr)
	e := &Error{
		Code:    Code(C.hms_error_code(cerr)),
		Message: goString(C.hms_error_message(cerr)),
		Source:  goString(C.hms_error_source(cerr)),
	}
	if e.Code == CodeOK {
		e.Code = Code(rc)
	}
	if n := C.hms_error_detail_count(cerr); n > 0 {
		e.Details = make(map[string]string, int(n))
		for i := C.size_t(0); i < n; i++ {
			var k, v *C.char
			if C.hms_error_detail(cerr, i, &k, &v) == 0 {
				e.Details[goString(k)] = goString(v)
			}
		}
	}
	return e
}

func goString(s *C.char) string {
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

// takeBytes copies a string the library returned and frees it.
func takeBytes(s *C.char, n C.size_t) []byte {
	if s == nil {
		return nil
	}
	b := C.GoBytes(unsafe.Pointer(s), C.int(n))
	C.hms_string_free(&s)
	return b
}

// cString is a NUL-terminated copy of s in C memory, or NULL for "" when nullIfEmpty; free it
// with freeCString.
func cString(s string, nullIfEmpty bool) *C.char {
	if s == "" && nullIfEmpty {
		return nil
	}
	return C.CString(s)
}

func freeCString(s *C.char) {
	if s != nil {
		C.free(unsafe.Pointer(s))
	}
}

// bytesPtr points C at b, which it reads during the call only (cgo's pointer rules allow it:
// b holds no Go pointers). b must not be empty.
func bytesPtr(b []byte) *C.char { return (*C.char)(unsafe.Pointer(&b[0])) }

// marshalJSON encodes a call's params, a reply or a message: nil is {}, a json.RawMessage is
// sent as it is, anything else goes through encoding/json; an error has the code given.
func marshalJSON(v any, code Code, what string) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return []byte("{}"), nil
	case json.RawMessage:
		if len(x) == 0 {
			return []byte("{}"), nil
		}
		return x, nil
	case *json.RawMessage:
		if x == nil || len(*x) == 0 {
			return []byte("{}"), nil
		}
		return *x, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, encodingError(code, "encoding "+what, err)
	}
	if len(b) == 0 || string(b) == "null" {
		return []byte("{}"), nil
	}
	return b, nil
}

// unmarshalJSON decodes JSON from the library into out (nothing when out is nil).
func unmarshalJSON(data []byte, out any, what string) error {
	if out == nil {
		return nil
	}
	if len(data) == 0 {
		data = []byte("{}")
	}
	if err := json.Unmarshal(data, out); err != nil {
		return encodingError(CodeInternal, fmt.Sprintf("decoding %s into %T", what, out), err)
	}
	return nil
}

// timeoutNs converts what is left until a deadline to the C ABI's timeout: 0 means "the
// client's default", so a deadline that is set is never 0 ns away (it is at least 1).
func timeoutNs(d time.Duration) C.int64_t {
	if d <= 0 {
		return 1
	}
	return C.int64_t(d.Nanoseconds())
}

// handle guards one C handle shared by goroutines: each use holds a reference, and the C object
// is freed exactly once, by close when nothing uses it, else by the last use that ends.
type handle struct {
	mu     sync.Mutex
	refs   int
	closed bool
	free   func() // nil once called
}

func (h *handle) init(free func()) { h.free = free }

// acquire takes a reference; false once the handle is closed.
func (h *handle) acquire() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.refs++
	return true
}

func (h *handle) release() {
	h.mu.Lock()
	h.refs--
	f := h.takeFreeLocked()
	h.mu.Unlock()
	if f != nil {
		f()
	}
}

// close marks the handle closed and frees it if nothing uses it; it reports whether this was
// the first close.
func (h *handle) close() bool {
	h.mu.Lock()
	first := !h.closed
	h.closed = true
	f := h.takeFreeLocked()
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return first
}

func (h *handle) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}

func (h *handle) takeFreeLocked() func() {
	if !h.closed || h.refs != 0 || h.free == nil {
		return nil
	}
	f := h.free
	h.free = nil
	return f
}
