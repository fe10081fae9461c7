<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;

/**
 * A server stream from Stub::stream(): `foreach ($stream as $item)` yields each item as an array
 * (a Generator underneath) until the service ends it; an error end throws. cancel()/close() stop
 * it early; the destructor frees it (cancelling one not ended).
 *
 * @implements \IteratorAggregate<int, array<string, mixed>>
 */
final class Stream implements \IteratorAggregate
{
    private FFI\CData $handle; // hms_stream_t*
    private bool $ended = false;

    /** @internal use Stub::stream() */
    public function __construct(private Stub $stub, FFI\CData $handle)
    {
        $this->handle = $handle;
    }

    /** The next item, or null at the end (blocks). Throws the status an error end carries. */
    public function next(): ?array
    {
        if ($this->ended || FFI::isNull($this->handle)) {
            return null;
        }
        $ffi = Native::ffi();
        $item = $ffi->new('char*');
        $len = $ffi->new('size_t');
        $err = Native::errorSlot();
        $rc = $ffi->hms_stream_next_json($this->handle, FFI::addr($item), FFI::addr($len), FFI::addr($err));
        if ($rc !== 0) {
            $this->ended = true;
            throw Native::exception($rc, $err);
        }
        $s = Native::takeString($item, $len);
        if ($s === null) {
            $this->ended = true;
            return null;
        }
        return Native::decode($s);
    }

    /** @return \Generator<int, array<string, mixed>> */
    public function getIterator(): \Generator
    {
        while (($item = $this->next()) !== null) {
            yield $item;
        }
    }

    public function cancel(): void
    {
        if (!$this->ended && !FFI::isNull($this->handle)) {
            Native::ffi()->hms_stream_cancel($this->handle);
        }
    }

    public function close(): void
    {
        if (!FFI::isNull($this->handle)) {
            Native::ffi()->hms_stream_free(FFI::addr($this->handle));
        }
        $this->ended = true;
    }

    public function __destruct()
    {
        $this->close();
    }
}
