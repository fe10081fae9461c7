<?php

declare(strict_types=1);

namespace Hms\Ffi\Tests;

use Hms\Ffi\AbortedException;
use Hms\Ffi\Client;
use Hms\Ffi\DeadlineExceededException;
use Hms\Ffi\HmsException;
use Hms\Ffi\InvalidArgumentException;
use Hms\Ffi\NotFoundException;
use Hms\Ffi\UnavailableException;
use Hms\Ffi\UnimplementedException;
use Hms\Ffi\Tests\Support\Processes;
use PHPUnit\Framework\TestCase;

/**
 * The calls every binding must make against a TestService (tests/support/test.capnp) served by
 * another language, on both transports. A subclass names the service's program and id; each
 * class runs its own broker.
 */
abstract class ServiceTestCase extends TestCase
{
    protected static Processes $p;
    /** @var array<string, Client> */
    private static array $clients = [];

    /** The service id the class serves. */
    abstract protected static function serviceId(): string;

    /** argv of a TestService process serving $id on the broker at $socket. */
    abstract protected static function serviceArgv(string $socket, string $id): array;

    public static function setUpBeforeClass(): void
    {
        self::$p = new Processes();
        self::$p->startBroker();
        self::$p->startService('service', static::serviceArgv(self::$p->socket, static::serviceId()));
    }

    public static function tearDownAfterClass(): void
    {
        foreach (self::$clients as $c) {
            $c->close();
        }
        self::$clients = [];
        self::$p->stopAll();
    }

    public static function transports(): array
    {
        return ['auto (shared memory)' => ['auto'], 'socket' => ['socket']];
    }

    protected static function client(string $transport): Client
    {
        return self::$clients[$transport] ??= self::$p->connect($transport);
    }

    /** @dataProvider transports */
    public function testTransportIsTheOneAskedFor(string $transport): void
    {
        $this->assertSame($transport === 'auto', self::client($transport)->usesSharedMemory());
    }

    /** @dataProvider transports */
    public function testEchoRoundTripsIntegersAndData(string $transport): void
    {
        $stub = self::client($transport)->bind(static::serviceId(), '^1.0');
        $this->assertSame(static::serviceId(), $stub->serviceId());
        $this->assertSame('1.0.0', $stub->version());
        $bytes = random_bytes(1000) . "\0\xff";
        $r = $stub->call('echo', ['seq' => '18446744073709551615', 'payload' => base64_encode($bytes)], timeout: 2.0);
        $this->assertSame('18446744073709551615', $r['seq']); // UInt64 as a decimal string
        $this->assertSame($bytes, base64_decode($r['payload'], true));
        $r = $stub->call('echo', ['seq' => 7]); // a number is accepted too
        $this->assertSame('7', $r['seq']);
    }

    /** @dataProvider transports */
    public function testEmptyParamsAreSentAsAnObject(string $transport): void
    {
        $stub = self::client($transport)->bind(static::serviceId(), '^1.0');
        foreach ([[], null, new \stdClass()] as $params) {
            $r = $stub->call('whoami', $params);
            $this->assertSame('1.0.0', $r['version']);
            $this->assertSame(getmypid(), $r['callerPid']);
        }
        $this->assertArrayHasKey('notes', $stub->call('stats', []));
    }

    /** @dataProvider transports */
    public function testEveryServiceErrorArrivesAsItsExceptionWithSourceAndDetails(string $transport): void
    {
        $stub = self::client($transport)->bind(static::serviceId(), '^1.0');
        foreach (HmsException::CLASSES as $code => $class) {
            try {
                $stub->call('fail', ['code' => $code, 'message' => "failing with $code"], timeout: 5.0);
                $this->fail("no exception for code $code");
            } catch (HmsException $e) {
                $this->assertInstanceOf($class, $e, "code $code");
                $this->assertSame($code, $e->getCode());
                $this->assertSame(HmsException::NAMES[$code], $e->getStatusName());
                $this->assertSame("failing with $code", $e->getMessage());
                $this->assertSame(static::serviceId(), $e->getSource(), "code $code");
                $this->assertSame(['hint' => 'asked to fail'], $e->getDetails(), "code $code");
            }
        }
    }

    /** @dataProvider transports */
    public function testDeadline(string $transport): void
    {
        $stub = self::client($transport)->bind(static::serviceId(), '^1.0');
        $t0 = microtime(true);
        try {
            $stub->call('sleep', ['ms' => 1500], timeout: 0.3);
            $this->fail('no deadline');
        } catch (DeadlineExceededException $e) {
            $this->assertSame(4, $e->getCode());
        }
        $this->assertLessThan(1.2, microtime(true) - $t0);
        // The stub goes on. (A service that ignores cancellation, as the C++ test service's sleep
        // does, finishes the abandoned call first: a stub's calls are served in order.)
        $r = $stub->call('sleep', ['ms' => 1], timeout: 10.0);
        $this->assertArrayHasKey('calls', $r);
    }

    /** @dataProvider transports */
    public function testUnknownMethodBadFieldAndUnknownService(string $transport): void
    {
        $client = self::client($transport);
        $stub = $client->bind(static::serviceId(), '^1.0');
        try {
            $stub->call('noSuchMethod', []);
            $this->fail('no exception');
        } catch (UnimplementedException $e) {
            $this->assertStringContainsString('noSuchMethod', $e->getMessage());
            $this->assertSame('', $e->getSource());
        }
        try {
            $stub->call('echo', ['sequence' => 1]);
            $this->fail('no exception');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('sequence', $e->getMessage());
        }
        try {
            $stub->call('sleep', ['ms' => 'not a number']);
            $this->fail('no exception');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('ms', $e->getMessage());
        }
        try {
            $stub->call('echo', [1, 2]); // a list is not an object
            $this->fail('no exception');
        } catch (InvalidArgumentException $e) {
            $this->assertStringContainsString('associative', $e->getMessage());
        }
        try {
            $client->bind('hms.no.such.service', '^1.0');
            $this->fail('no exception');
        } catch (NotFoundException $e) {
            $this->assertSame('', $e->getSource());
        }
        try {
            $client->bind(static::serviceId(), '^2.0');
            $this->fail('no exception');
        } catch (NotFoundException $e) {
            $this->assertStringContainsString(static::serviceId(), $e->getMessage());
        }
    }

    /** @dataProvider transports */
    public function testAsyncCallsInFlightTogether(string $transport): void
    {
        $client = self::client($transport);
        $stub = $client->bind(static::serviceId(), '^1.0');
        $t0 = microtime(true);
        $futures = [];
        $stubs = [];
        for ($i = 0; $i < 6; $i++) {
            // One stub each: a stub's calls are served in the order sent (see the README).
            $stubs[] = $s = $client->bind(static::serviceId(), '^1.0');
            $futures[] = $s->callAsync('sleep', ['ms' => 300], timeout: 10.0);
        }
        $echo = $stub->callAsync('echo', ['seq' => '99']);
        $failing = $stub->callAsync('fail', ['code' => 5, 'message' => 'gone']);
        $this->assertLessThan(0.25, microtime(true) - $t0); // sending does not wait for results
        foreach ($futures as $f) {
            $this->assertTrue($f->wait(10.0));
            $this->assertTrue($f->poll());
            $this->assertArrayHasKey('calls', $f->result());
        }
        // In flight together: well under 6 x 300 ms.
        $this->assertLessThan(1.5, microtime(true) - $t0);
        $this->assertSame('99', $echo->result()['seq']);
        try {
            $failing->result();
            $this->fail('no exception');
        } catch (NotFoundException $e) {
            $this->assertSame(static::serviceId(), $e->getSource());
            $this->assertSame(['hint' => 'asked to fail'], $e->getDetails());
        }
        $this->expectException(NotFoundException::class); // the same error again
        $failing->result();
    }

    /** @dataProvider transports */
    public function testAsyncWaitTimesOutThenCancel(string $transport): void
    {
        $stub = self::client($transport)->bind(static::serviceId(), '^1.0');
        $f = $stub->callAsync('sleep', ['ms' => 3000], timeout: 10.0);
        $this->assertFalse($f->wait(0.05));
        $this->assertFalse($f->poll());
        $f->cancel();
        $this->assertTrue($f->wait(5.0));
        $this->expectException(\Hms\Ffi\CancelledException::class);
        $f->result();
    }

    /** @dataProvider transports */
    public function testStreamAsGenerator(string $transport): void
    {
        $stub = self::client($transport)->bind(static::serviceId(), '^1.0');
        $values = [];
        foreach ($stub->stream('count', ['from' => '5', 'n' => '4', 'payloadBytes' => 3]) as $item) {
            $values[] = $item['value'];
            $this->assertSame(3, strlen(base64_decode($item['payload'])));
        }
        $this->assertSame(['5', '6', '7', '8'], $values);

        $values = [];
        try {
            foreach ($stub->stream('count', ['from' => '0', 'n' => '10', 'failAt' => '3']) as $item) {
                $values[] = $item['value'];
            }
            $this->fail('no exception');
        } catch (AbortedException $e) {
            $this->assertSame(['0', '1', '2'], $values);
            $this->assertSame(static::serviceId(), $e->getSource());
        }

        $s = $stub->stream('count', ['from' => '0', 'n' => '100000', 'delayUs' => 1000]);
        $this->assertSame('0', $s->next()['value']);
        $s->close(); // cancels a stream not ended
        $this->assertNull($s->next());
        $this->assertSame('1', $stub->call('echo', ['seq' => '1'])['seq']); // the stub goes on
    }

    /** @dataProvider transports */
    public function testServiceKilledMidCallIsUnavailable(string $transport): void
    {
        $id = static::serviceId() . '.kill.' . $transport;
        $svc = self::$p->startService('victim', static::serviceArgv(self::$p->socket, $id));
        $client = self::$p->connect($transport);
        $stub = $client->bind($id, '^1.0');
        $this->assertArrayHasKey('pid', $stub->call('whoami'));
        $f = $stub->callAsync('sleep', ['ms' => 10000], timeout: 30.0);
        usleep(300_000); // let the request reach the service
        self::$p->kill($svc, 9);
        $t0 = microtime(true);
        try {
            $f->result();
            $this->fail('no exception');
        } catch (UnavailableException $e) {
            $this->assertSame(14, $e->getCode());
        }
        $this->assertLessThan(8.0, microtime(true) - $t0);
        // A synchronous call to the dead service fails the same way, at once.
        try {
            $stub->call('whoami', [], timeout: 5.0);
            $this->fail('no exception');
        } catch (UnavailableException | NotFoundException $e) {
            $this->assertContains($e->getCode(), [5, 14]);
        }
        $stub->close();
        $client->close();
    }
}
