module hmsffi.dev/ffi

go 1.19
