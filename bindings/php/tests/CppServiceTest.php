<?php

declare(strict_types=1);

namespace Hms\Ffi\Tests;

use Hms\Ffi\Tests\Support\Processes;

/** PHP → C++: the C++ hms-ffi-test-service. */
final class CppServiceTest extends ServiceTestCase
{
    protected static function serviceId(): string
    {
        return 'hms.test';
    }

    protected static function serviceArgv(string $socket, string $id): array
    {
        return [Processes::cppServiceBinary(), '--socket', $socket, '--id', $id, '--workers', '8'];
    }
}
