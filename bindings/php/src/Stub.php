<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;

/**
 * A bound service: calls go to the version Client::bind() chose. Params go in as an associative
 * array (a JSON object: [] is {}; use (object)[] or new \stdClass for an empty nested struct), and
 * results come back as one. The JSON mapping is the library's (docs/contracts.md): field names as
 * in the schema, 64-bit integers as decimal strings, Data as base64, enums by name.
 *
 * One call at a time per stub (PHP is single-threaded anyway); use callAsync() for calls in
 * flight together. The C handle is freed exactly once, by close() or the destructor.
 */
final class Stub
{
    private FFI\CData $handle; // hms_stub_t*
    private string $serviceId;
    private string $version;

    /** @internal use Client::bind() */
    public function __construct(private Client $client, FFI\CData $handle)
    {
        $this->handle = $handle;
        $ffi = Native::ffi();
        $this->serviceId = (string) $ffi->hms_stub_service_id($handle);
        $this->version = (string) $ffi->hms_stub_service_version($handle);
    }

    /** The id of the bound service ("hms.emr.patient"). */
    public function serviceId(): string
    {
        return $this->serviceId;
    }

    /** The exact version bound ("1.2.0"). */
    public function version(): string
    {
        return $this->version;
    }

    public function client(): Client
    {
        return $this->client;
    }

    /**
     * Calls $method and returns its results (blocks until they come or the deadline passes).
     *
     * @param array<string, mixed>|object|string|null $params an associative array, an object, or a JSON string
     * @param float|null $timeout seconds; null: the client's default_timeout
     * @param string|null $traceparent a W3C traceparent to carry
     * @return array<string, mixed>
     * @throws HmsException the call's status: UnimplementedException for a method the contract
     *   lacks, InvalidArgumentException for params that do not fit the schema (naming the
     *   field), DeadlineExceededException, UnavailableException, or the service's own error.
     */
    public function call(string $method, array|object|string|null $params = [], ?float $timeout = null,
                         ?string $traceparent = null): array
    {
        $ffi = Native::ffi();
        $this->check();
        $json = Native::encode($params);
        $keep = [];
        $o = Native::callOptions($timeout, $traceparent, $keep);
        $res = $ffi->new('char*');
        $len = $ffi->new('size_t');
        $err = Native::errorSlot();
        $rc = $ffi->hms_stub_call_json($this->handle, $method, $json, strlen($json), FFI::addr($o),
            FFI::addr($res), FFI::addr($len), FFI::addr($err));
        if ($rc !== 0) {
            throw Native::exception($rc, $err);
        }
        return Native::decode(Native::takeString($res, $len));
    }

    /**
     * Sends a call and returns at once with a Future of its result (many may be in flight).
     *
     * @throws HmsException what is wrong before anything is sent (unknown method, bad params).
     */
    public function callAsync(string $method, array|object|string|null $params = [], ?float $timeout = null,
                              ?string $traceparent = null): Future
    {
        $ffi = Native::ffi();
        $this->check();
        $json = Native::encode($params);
        $keep = [];
        $o = Native::callOptions($timeout, $traceparent, $keep);
        $fut = $ffi->new('hms_future_t*');
        $err = Native::errorSlot();
        $rc = $ffi->hms_stub_call_async_json($this->handle, $method, $json, strlen($json), FFI::addr($o),
            FFI::addr($fut), FFI::addr($err));
        if ($rc !== 0) {
            throw Native::exception($rc, $err);
        }
        return new Future($this, $fut);
    }

    /** Sends a call that expects no reply (returns once it is in the channel). */
    public function callOneWay(string $method, array|object|string|null $params = [], ?float $timeout = null): void
    {
        $ffi = Native::ffi();
        $this->check();
        $json = Native::encode($params);
        $keep = [];
        $o = Native::callOptions($timeout, null, $keep);
        $err = Native::errorSlot();
        $rc = $ffi->hms_stub_call_oneway_json($this->handle, $method, $json, strlen($json), FFI::addr($o),
            FFI::addr($err));
        if ($rc !== 0) {
            throw Native::exception($rc, $err);
        }
    }

    /**
     * Opens a server stream: iterate the returned Stream (foreach) for its items as arrays; the
     * loop ends when the service finishes it, or throws the status it ended with. $timeout
     * bounds the whole stream.
     */
    public function stream(string $method, array|object|string|null $params = [], ?float $timeout = null): Stream
    {
        $ffi = Native::ffi();
        $this->check();
        $json = Native::encode($params);
        $keep = [];
        $o = Native::callOptions($timeout, null, $keep);
        $s = $ffi->new('hms_stream_t*');
        $err = Native::errorSlot();
        $rc = $ffi->hms_stub_open_stream_json($this->handle, $method, $json, strlen($json), FFI::addr($o),
            FFI::addr($s), FFI::addr($err));
        if ($rc !== 0) {
            throw Native::exception($rc, $err);
        }
        return new Stream($this, $s);
    }

    public function close(): void
    {
        if (!FFI::isNull($this->handle)) {
            Native::ffi()->hms_stub_free(FFI::addr($this->handle));
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    private function check(): void
    {
        if (FFI::isNull($this->handle)) {
            throw new FailedPreconditionException('the stub is closed');
        }
    }
}
