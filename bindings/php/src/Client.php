<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;

/**
 * A connection to the HMS-FFI broker.
 *
 *     $client = Client::connect(['socket_path' => '/run/user/1000/hms-ffi/broker.sock', 'name' => 'hms-api']);
 *     $emr = $client->bind('hms.emr.patient', '^1.0');
 *     $reply = $emr->call('getPatient', ['patientId' => 'p-1001']);
 *     $client->close();
 *
 * The C handle is freed exactly once: by close(), or by the destructor.
 */
final class Client
{
    private const TRANSPORTS = ['auto' => 0, 'shm' => 1, 'socket' => 2];
    private const WAIT_MODES = ['adaptive' => 0, 'spin' => 1, 'blocking' => 2];

    private FFI\CData $handle; // hms_client_t*

    private function __construct(FFI\CData $handle)
    {
        $this->handle = $handle;
    }

    /**
     * Connects to the broker (blocks up to 5 s).
     *
     * @param array{socket_path?: ?string, name?: ?string, transport?: string,
     *              default_timeout?: float, wait_mode?: string, reconnect?: bool} $options
     *   socket_path: the broker's socket (default: $HMS_FFI_SOCKET, else the per-user default);
     *   name: shown in the registry (default "<program>[<pid>]");
     *   transport: 'auto' (shared memory where possible, default), 'socket' or 'shm';
     *   default_timeout: seconds, for calls that set none (default 30);
     *   wait_mode: 'adaptive' (default), 'spin' or 'blocking';
     *   reconnect: reconnect to a restarted broker (default true).
     * @throws HmsException UnavailableException when no broker answers, InvalidArgumentException
     *   for a bad option.
     */
    public static function connect(array $options = []): self
    {
        $known = ['socket_path', 'name', 'transport', 'default_timeout', 'wait_mode', 'reconnect'];
        foreach (array_keys($options) as $k) {
            if (!in_array($k, $known, true)) {
                throw new InvalidArgumentException("unknown option '$k' (known: " . implode(', ', $known) . ')');
            }
        }
        $ffi = Native::ffi();
        $o = $ffi->new('hms_client_options_t');
        $ffi->hms_client_options_init(FFI::addr($o));
        $keep = [];
        if (isset($options['socket_path'])) {
            $keep[] = $c = Native::cString((string) $options['socket_path']);
            $o->socket_path = $ffi->cast('const char*', $c);
        }
        if (isset($options['name'])) {
            $keep[] = $c = Native::cString((string) $options['name']);
            $o->name = $ffi->cast('const char*', $c);
        }
        if (isset($options['transport'])) {
            $t = self::TRANSPORTS[$options['transport']] ?? null;
            if ($t === null) {
                throw new InvalidArgumentException("transport must be 'auto', 'socket' or 'shm', not '{$options['transport']}'");
            }
            $o->transport = $t;
        }
        if (isset($options['wait_mode'])) {
            $w = self::WAIT_MODES[$options['wait_mode']] ?? null;
            if ($w === null) {
                throw new InvalidArgumentException("wait_mode must be 'adaptive', 'spin' or 'blocking'");
            }
            $o->wait_mode = $w;
        }
        if (isset($options['default_timeout'])) {
            $t = (float) $options['default_timeout'];
            if ($t <= 0) {
                throw new InvalidArgumentException('default_timeout must be > 0 seconds');
            }
            $o->default_timeout_ms = max(1, (int) round($t * 1000));
        }
        if (isset($options['reconnect'])) {
            $o->reconnect = $options['reconnect'] ? 1 : 0;
        }
        $handle = $ffi->new('hms_client_t*');
        $err = Native::errorSlot();
        $rc = $ffi->hms_client_connect(FFI::addr($o), FFI::addr($handle), FFI::addr($err));
        unset($keep);
        if ($rc !== 0) {
            throw Native::exception($rc, $err);
        }
        return new self($handle);
    }

    /**
     * A stub on the highest live version of $serviceId in $range ("^1.0", "*", null: any).
     *
     * @throws NotFoundException when no live version is in the range.
     */
    public function bind(string $serviceId, ?string $range = '^1'): Stub
    {
        $ffi = Native::ffi();
        $this->check();
        $stub = $ffi->new('hms_stub_t*');
        $err = Native::errorSlot();
        $rc = $ffi->hms_client_bind($this->handle, $serviceId, $range, FFI::addr($stub), FFI::addr($err));
        if ($rc !== 0) {
            throw Native::exception($rc, $err);
        }
        return new Stub($this, $stub);
    }

    /** The contract of $serviceId at exactly $version ("1.2.0") as an array. */
    public function contract(string $serviceId, string $version): array
    {
        $ffi = Native::ffi();
        $this->check();
        $json = $ffi->new('char*');
        $len = $ffi->new('size_t');
        $err = Native::errorSlot();
        $rc = $ffi->hms_client_contract_json($this->handle, $serviceId, $version, FFI::addr($json),
            FFI::addr($len), FFI::addr($err));
        if ($rc !== 0) {
            throw Native::exception($rc, $err);
        }
        return Native::decode(Native::takeString($json, $len));
    }

    /** The broker's id for this client. */
    public function id(): int
    {
        $this->check();
        return (int) Native::ffi()->hms_client_id($this->handle);
    }

    /** Whether the client maps shared memory (false: it runs on Unix sockets). */
    public function usesSharedMemory(): bool
    {
        $this->check();
        return Native::ffi()->hms_client_uses_shared_memory($this->handle) !== 0;
    }

    public function isClosed(): bool
    {
        return FFI::isNull($this->handle);
    }

    /**
     * Closes the connection. Stubs made from it stay safe to use (their calls fail with
     * UNAVAILABLE or FAILED_PRECONDITION) and are freed by their own close() or destructor.
     * Closing twice does nothing.
     */
    public function close(): void
    {
        if (!FFI::isNull($this->handle)) {
            Native::ffi()->hms_client_free(FFI::addr($this->handle));
        }
    }

    public function __destruct()
    {
        $this->close();
    }

    /** The ABI version of the loaded library: [major, minor]. */
    public static function abiVersion(): array
    {
        $v = Native::ffi()->hms_abi_version();
        return [$v >> 16, $v & 0xffff];
    }

    private function check(): void
    {
        if (FFI::isNull($this->handle)) {
            throw new FailedPreconditionException('the client is closed');
        }
    }
}
