package ffi

import (
	"os"
	"syscall"
	"time"
)

// waitReadable parks the goroutine in Go's network poller, without an OS thread, until fd (a
// readiness descriptor the library owns) is readable and ready() is true, or deadline (zero:
// none) passed; done says whether ready() held. waited is false when fd cannot be waited on
// that way (none, or a blocking one: setting O_NONBLOCK on a duplicate would change the
// library's own descriptor); the caller then waits in C.
func waitReadable(fd int, ready func() bool, deadline time.Time) (done, waited bool) {
	if fd < 0 {
		return false, false
	}
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if errno != 0 || flags&syscall.O_NONBLOCK == 0 {
		return false, false
	}
	// A duplicate, because closing the os.File closes its descriptor and the library owns fd.
	dup, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return false, false
	}
	f := os.NewFile(dup, "hms-ffi-readiness")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false, false
	}
	if !deadline.IsZero() {
		if err := f.SetReadDeadline(deadline); err != nil {
			return false, false // not in the poller
		}
	}
	// Read calls the function, and while it returns false waits until the poller reports the
	// descriptor readable or the deadline passes.
	err = rc.Read(func(uintptr) bool { return ready() })
	if err == nil {
		return true, true
	}
	if os.IsTimeout(err) {
		return ready(), true
	}
	return false, false // the poller does not take this descriptor
}
