<?php

declare(strict_types=1);

namespace Hms\Ffi\Tests;

use Hms\Ffi\Client;
use Hms\Ffi\FailedPreconditionException;
use Hms\Ffi\HmsException;
use Hms\Ffi\InvalidArgumentException;
use Hms\Ffi\NotFoundException;
use Hms\Ffi\UnavailableException;
use Hms\Ffi\Tests\Support\Processes;
use PHPUnit\Framework\TestCase;

/** The client's life: connecting, options, closing, and handles freed once. */
final class ClientTest extends TestCase
{
    private static Processes $p;

    public static function setUpBeforeClass(): void
    {
        self::$p = new Processes();
        self::$p->startBroker();
        self::$p->startService('service', [Processes::cppServiceBinary(), '--socket', self::$p->socket]);
    }

    public static function tearDownAfterClass(): void
    {
        self::$p->stopAll();
    }

    public function testAbiVersionAndCdefMatchTheHeader(): void
    {
        $this->assertSame(1, Client::abiVersion()[0]);
        $header = (string) file_get_contents(dirname(__DIR__, 3) . '/libclient/include/hms/ffi/hms_ffi.h');
        $decls = require dirname(__DIR__) . '/src/hms_ffi.h.php';
        preg_match_all('/HMS_FFI_API\s+[^(]*?\b(hms_\w+)\s*\(/', $header, $m);
        $this->assertSame(substr_count($header, 'HMS_FFI_API') - 2, count($m[1])); // all but the two #defines
        foreach ($m[1] as $fn) {
            $this->assertMatchesRegularExpression('/\b' . $fn . '\s*\(/', $decls, "$fn is missing from src/hms_ffi.h.php");
        }
    }

    public function testNoBrokerIsUnavailable(): void
    {
        try {
            Client::connect(['socket_path' => self::$p->dir . '/nothing-here.sock']);
            $this->fail('no exception');
        } catch (UnavailableException $e) {
            $this->assertSame(14, $e->getCode());
            $this->assertSame('', $e->getSource());
        }
    }

    public function testBadOptions(): void
    {
        foreach ([['transport' => 'pigeon'], ['socketpath' => 'x'], ['default_timeout' => 0]] as $o) {
            try {
                Client::connect($o);
                $this->fail('no exception for ' . json_encode($o));
            } catch (InvalidArgumentException $e) {
                $this->assertSame(3, $e->getCode());
            }
        }
    }

    public function testCloseTwiceAndUseAfterClose(): void
    {
        $c = self::$p->connect('auto', ['name' => 'php-close', 'default_timeout' => 3.0]);
        $this->assertGreaterThan(0, $c->id());
        $stub = $c->bind('hms.test', '^1.0');
        $this->assertSame('1.0.0', $stub->version());
        $c->close();
        $c->close();
        $this->assertTrue($c->isClosed());
        try {
            $c->bind('hms.test', '^1.0');
            $this->fail('no exception');
        } catch (FailedPreconditionException $e) {
            $this->assertStringContainsString('closed', $e->getMessage());
        }
        try {
            $stub->call('whoami'); // the library answers for a stub whose client is gone
            $this->fail('no exception');
        } catch (HmsException $e) {
            $this->assertContains($e->getCode(), [9, 14]);
        }
        $stub->close();
        $stub->close();
        $this->expectException(FailedPreconditionException::class);
        $stub->call('whoami');
    }

    public function testManyClientsAndStubsFreedByDestructors(): void
    {
        for ($i = 0; $i < 20; $i++) {
            $c = self::$p->connect($i % 2 ? 'socket' : 'auto');
            $s = $c->bind('hms.test', '*');
            $this->assertSame((string) $i, $s->call('echo', ['seq' => (string) $i])['seq']);
            $f = $s->callAsync('echo', ['seq' => '1']); // a future never collected
            unset($c); // the stub keeps its client alive until it goes
            unset($s, $f);
        }
        $this->assertTrue(true);
    }

    public function testContract(): void
    {
        $c = self::$p->connect();
        $contract = $c->contract('hms.test', '1.0.0');
        $this->assertSame('hms.test', $contract['id']);
        $this->assertContains('echo', array_column($contract['methods'], 'name'));
        $this->expectException(NotFoundException::class);
        $c->contract('hms.test', '9.9.9');
    }

    public function testExceptionHierarchyCoversEveryCode(): void
    {
        foreach (HmsException::CLASSES as $code => $class) {
            $e = HmsException::fromStatus($code, 'm', 'svc', ['k' => 'v']);
            $this->assertInstanceOf($class, $e);
            $this->assertInstanceOf(HmsException::class, $e);
            $this->assertInstanceOf(\RuntimeException::class, $e);
            $this->assertSame($code, $e->getCode());
            $this->assertSame('svc', $e->getSource());
            $this->assertSame(['k' => 'v'], $e->getDetails());
            $this->assertStringContainsString(HmsException::NAMES[$code], (string) $e);
        }
        $this->assertSame(99, HmsException::fromStatus(99, 'odd')->getCode());
    }
}
