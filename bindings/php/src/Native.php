<?php

declare(strict_types=1);

namespace Hms\Ffi;

use FFI;

/**
 * The one FFI instance over libhmsffi.so.1 (the C ABI, libclient/include/hms/ffi/hms_ffi.h).
 *
 * The library is found, in order: Native::$libraryPath if set, the environment variable
 * HMS_FFI_LIBRARY, this source tree's build/release/libclient/libhmsffi.so.1 if it exists, else
 * "libhmsffi.so.1" through the dynamic loader's search path.
 *
 * @internal
 */
final class Native
{
    /** Set before the first connect to load the library from a given path. */
    public static ?string $libraryPath = null;

    private static ?FFI $ffi = null;

    public static function ffi(): FFI
    {
        if (self::$ffi === null) {
            if (!extension_loaded('FFI')) {
                throw new FailedPreconditionException('the PHP FFI extension is not loaded');
            }
            $path = self::$libraryPath ?? (getenv('HMS_FFI_LIBRARY') ?: null);
            if ($path === null) {
                $inTree = dirname(__DIR__, 3) . '/build/release/libclient/libhmsffi.so.1';
                $path = is_file($inTree) ? $inTree : 'libhmsffi.so.1';
            }
            $decls = require __DIR__ . '/hms_ffi.h.php';
            try {
                self::$ffi = FFI::cdef($decls, $path);
            } catch (\FFI\Exception $e) {
                throw new FailedPreconditionException(
                    "cannot load libhmsffi from '$path' (set HMS_FFI_LIBRARY): " . $e->getMessage()
                );
            }
            $abi = self::$ffi->hms_abi_version();
            if (($abi >> 16) !== 1) {
                throw new FailedPreconditionException(
                    sprintf("libhmsffi at '%s' has ABI %d.%d; this binding needs 1.x", $path, $abi >> 16, $abi & 0xffff)
                );
            }
        }
        return self::$ffi;
    }

    /** An empty hms_error_t* slot, to pass by FFI::addr(). */
    public static function errorSlot(): FFI\CData
    {
        return self::ffi()->new('hms_error_t*');
    }

    /**
     * The exception for a failed call: from the hms_error_t (freed here) if the library filled
     * one, else from the status code alone.
     */
    public static function exception(int $code, FFI\CData $errSlot, string $fallback = ''): HmsException
    {
        $ffi = self::ffi();
        if (FFI::isNull($errSlot)) {
            $name = $ffi->hms_status_name($code);
            return HmsException::fromStatus($code, $fallback !== '' ? $fallback : $name, '', []);
        }
        $errCode = $ffi->hms_error_code($errSlot);
        $message = (string) $ffi->hms_error_message($errSlot);
        $source = (string) $ffi->hms_error_source($errSlot);
        $details = [];
        $n = $ffi->hms_error_detail_count($errSlot);
        $k = $ffi->new('const char*');
        $v = $ffi->new('const char*');
        for ($i = 0; $i < $n; $i++) {
            if ($ffi->hms_error_detail($errSlot, $i, FFI::addr($k), FFI::addr($v)) === 0) {
                $details[FFI::string($k)] = FFI::string($v);
            }
        }
        $ffi->hms_error_free(FFI::addr($errSlot));
        return HmsException::fromStatus($errCode !== 0 ? $errCode : $code, $message, $source, $details);
    }

    /** Takes a string the library returned (char* + length) and frees it. */
    public static function takeString(FFI\CData $ptr, FFI\CData $len): ?string
    {
        if (FFI::isNull($ptr)) {
            return null;
        }
        $s = FFI::string($ptr, $len->cdata);
        self::ffi()->hms_string_free(FFI::addr($ptr));
        return $s;
    }

    /** A NUL-terminated copy of $s in C memory, owned by the returned CData (keep it alive). */
    public static function cString(string $s): FFI\CData
    {
        $buf = self::ffi()->new('char[' . (strlen($s) + 1) . ']');
        FFI::memcpy($buf, $s, strlen($s));
        return $buf;
    }

    /** Seconds (float) to the ABI's nanoseconds; null means the default. */
    public static function ns(?float $seconds): int
    {
        if ($seconds === null) {
            return 0;
        }
        if ($seconds <= 0) {
            return 1; // already past: the library reports DEADLINE_EXCEEDED
        }
        if ($seconds >= 9.2e9) {
            return PHP_INT_MAX; // no deadline
        }
        return max(1, (int) round($seconds * 1e9));
    }

    /** params to the JSON object the ABI takes: [] and null are {}, objects are encoded as such. */
    public static function encode(mixed $params): string
    {
        if ($params === null || $params === []) {
            return '{}';
        }
        if (is_string($params)) {
            return $params; // already JSON
        }
        if (is_array($params) && array_is_list($params)) {
            throw new InvalidArgumentException('params must be an associative array (a JSON object), not a list', '', []);
        }
        try {
            return json_encode($params, JSON_THROW_ON_ERROR | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE
                | JSON_PRESERVE_ZERO_FRACTION);
        } catch (\JsonException $e) {
            throw new InvalidArgumentException('params cannot be encoded as JSON: ' . $e->getMessage(), '', []);
        }
    }

    /** @return array<string, mixed> */
    public static function decode(?string $json): array
    {
        if ($json === null || $json === '') {
            return [];
        }
        try {
            $v = json_decode($json, true, 512, JSON_THROW_ON_ERROR | JSON_BIGINT_AS_STRING);
        } catch (\JsonException $e) {
            throw new InternalException('the library returned JSON that does not parse: ' . $e->getMessage(), '', []);
        }
        return is_array($v) ? $v : ['value' => $v];
    }

    /** hms_call_options_t for a timeout in seconds (null: the client's default). */
    public static function callOptions(?float $timeout, ?string $traceparent, array &$keep): FFI\CData
    {
        $ffi = self::ffi();
        $o = $ffi->new('hms_call_options_t');
        $ffi->hms_call_options_init(FFI::addr($o));
        $o->timeout_ns = self::ns($timeout);
        if ($traceparent !== null) {
            $keep[] = $c = self::cString($traceparent);
            $o->traceparent = $ffi->cast('const char*', $c);
        }
        return $o;
    }
}
