<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;

/**
 * The result of Stub::callAsync(), to come. wait() blocks for it (with a bound), poll() asks,
 * result() returns it (or throws the call's error) once. No callbacks: nothing runs on a thread
 * of the library's (PHP FFI cannot take those).
 */
final class Future
{
    private FFI\CData $handle; // hms_future_t*
    private bool $done = false;
    private ?array $result = null;
    private ?HmsException $error = null;

    /** @internal use Stub::callAsync() */
    public function __construct(private Stub $stub, FFI\CData $handle)
    {
        $this->handle = $handle;
    }

    /** Whether the result is there (result() will not wait). */
    public function poll(): bool
    {
        return $this->done || Native::ffi()->hms_future_poll($this->handle) === 1;
    }

    /**
     * Waits up to $timeout seconds (null: until the call's deadline) for the result.
     * Returns true when it is there, false when it is not yet.
     */
    public function wait(?float $timeout = null): bool
    {
        if ($this->done) {
            return true;
        }
        $ns = $timeout === null ? -1 : ($timeout <= 0 ? 0 : Native::ns($timeout));
        return Native::ffi()->hms_future_wait($this->handle, $ns) === 0;
    }

    /** A file descriptor number that becomes readable when the result is there (-1: none). */
    public function fd(): int
    {
        return $this->done ? -1 : Native::ffi()->hms_future_fd($this->handle);
    }

    /** Stops the call: result() then throws CancelledException unless the result came first. */
    public function cancel(): void
    {
        if (!$this->done) {
            Native::ffi()->hms_future_cancel($this->handle);
        }
    }

    /**
     * The call's results (blocks until they are there); throws the call's error. May be called
     * again: the same result or exception.
     *
     * @return array<string, mixed>
     */
    public function result(): array
    {
        if (!$this->done) {
            $ffi = Native::ffi();
            $res = $ffi->new('char*');
            $len = $ffi->new('size_t');
            $err = Native::errorSlot();
            $rc = $ffi->hms_future_result_json($this->handle, FFI::addr($res), FFI::addr($len), FFI::addr($err));
            $this->done = true;
            if ($rc !== 0) {
                $this->error = Native::exception($rc, $err);
            } else {
                $this->result = Native::decode(Native::takeString($res, $len));
            }
            $ffi->hms_future_free(FFI::addr($this->handle));
        }
        if ($this->error !== null) {
            throw $this->error;
        }
        return $this->result;
    }

    public function __destruct()
    {
        if (!FFI::isNull($this->handle)) {
            Native::ffi()->hms_future_free(FFI::addr($this->handle));
        }
    }
}
