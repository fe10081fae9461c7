<?php

declare(strict_types=1);

namespace Hms\Ffi\Tests;

use Hms\Ffi\Tests\Support\Processes;
use PHPUnit\Framework\TestCase;

/** The README's first example, pasted as it says, against the Go HMS-EMR. */
final class ReadmeTest extends TestCase
{
    public function testFirstExampleWorksPasted(): void
    {
        $readme = (string) file_get_contents(dirname(__DIR__) . '/README.md');
        $this->assertSame(1, preg_match('/```php\n(.*?)```/s', $readme, $code));
        $this->assertSame(1, preg_match('/\nIt prints\n\n((?: {4}.*\n)+)/', $readme, $expected));
        $expected = preg_replace('/^ {4}/m', '', $expected[1]);

        $p = new Processes();
        try {
            $p->startBroker();
            $p->startService('hms-emr', [Processes::goEmrBinary(), '--socket', $p->socket], 'hms-emr [go]: ready');
            // "at the root of the repository": a directory with bindings/php where the README says.
            mkdir($p->dir . '/root/bindings', 0700, true);
            symlink(dirname(__DIR__), $p->dir . '/root/bindings/php');
            file_put_contents($p->dir . '/root/hello.php', $code[1]);
            $env = getenv();
            $env['HMS_FFI_SOCKET'] = $p->socket;
            $proc = proc_open([PHP_BINARY, $p->dir . '/root/hello.php'],
                [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, null, $env);
            $out = stream_get_contents($pipes[1]);
            $err = stream_get_contents($pipes[2]);
            $rc = proc_close($proc);
            $this->assertSame(0, $rc, $out . $err);
            $this->assertSame($expected, $out);
        } finally {
            $p->stopAll();
        }
    }
}
