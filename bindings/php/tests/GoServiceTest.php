<?php

declare(strict_types=1);

namespace Hms\Ffi\Tests;

use Hms\Ffi\Tests\Support\Processes;

/** PHP → Go: the Go binding's hms-go-test-service. */
final class GoServiceTest extends ServiceTestCase
{
    protected static function serviceId(): string
    {
        return 'hms.test.go';
    }

    protected static function serviceArgv(string $socket, string $id): array
    {
        return [Processes::goServiceBinary(), '--socket', $socket, '--id', $id];
    }
}
