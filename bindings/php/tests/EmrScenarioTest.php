<?php

declare(strict_types=1);

namespace Hms\Ffi\Tests;

use Hms\Ffi\Client;
use Hms\Ffi\InvalidArgumentException;
use Hms\Ffi\NotFoundException;
use Hms\Ffi\Tests\Support\Processes;
use PHPUnit\Framework\TestCase;

/**
 * The seed's §4.2: HMS-API in PHP (examples/hms_api.php) calls HMS-EMR in Go
 * (bindings/go/cmd/hms-emr) on hms.emr.patient, on both transports.
 */
final class EmrScenarioTest extends TestCase
{
    private static Processes $p;
    private static int $emr;

    public static function setUpBeforeClass(): void
    {
        self::$p = new Processes();
        self::$p->startBroker();
        self::$emr = self::$p->startService('hms-emr', [Processes::goEmrBinary(), '--socket', self::$p->socket],
            'hms-emr [go]: ready');
    }

    public static function tearDownAfterClass(): void
    {
        self::$p->stopAll();
    }

    public static function transports(): array
    {
        return ['auto (shared memory)' => ['auto'], 'socket' => ['socket']];
    }

    /** @dataProvider transports */
    public function testHmsApiScriptAgainstGoEmr(string $transport): void
    {
        $script = dirname(__DIR__) . '/examples/hms_api.php';
        $cmd = [PHP_BINARY, $script, '--socket', self::$p->socket, '--transport', $transport];
        $proc = proc_open($cmd, [0 => ['file', '/dev/null', 'r'], 1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes,
            null, ['HMS_FFI_LIBRARY' => getenv('HMS_FFI_LIBRARY') ?: ''] + getenv());
        $this->assertIsResource($proc);
        stream_set_blocking($pipes[1], true);
        $out = stream_get_contents($pipes[1]); // ends when the script exits (it has 5 s deadlines)
        $err = stream_get_contents($pipes[2]);
        $rc = proc_close($proc);
        $this->assertSame(0, $rc, "hms_api.php failed:\n$out\n$err");
        foreach (explode("\n", trim($out)) as $line) {
            $this->assertStringStartsWith('hms-api [php]: ', $line);
        }
        $this->assertStringContainsString('bound hms.emr.patient 1.2.0 (' .
            ($transport === 'auto' ? 'shared memory' : 'Unix socket') . ')', $out);
        $this->assertStringContainsString('getPatient(p-1001) -> Amina Okafor, born 1984-03-12, 1 allergy', $out);
        $this->assertStringContainsString('getPatient(p-1003) -> Mei Okafor, born 2001-07-23, 2 allergies', $out);
        $this->assertStringContainsString("getPatient(p-9999) -> NOT_FOUND (code 5): no patient with id 'p-9999'; " .
            'source hms.emr.patient; details {"patientId":"p-9999"}', $out);
        $this->assertStringContainsString('searchPatients(Okafor) -> 2 patients: p-1001, p-1003', $out);
        // HMS-EMR logged each request.
        self::$p->waitFor(fn () => str_contains(self::$p->log(self::$emr), 'getPatient(p-9999)'), 5.0, 'the EMR log');
        $this->assertStringContainsString('hms-emr [go]: getPatient(p-1001) for pid', self::$p->log(self::$emr));
    }

    /** @dataProvider transports */
    public function testGoEmrDirectly(string $transport): void
    {
        $client = self::$p->connect($transport);
        $emr = $client->bind('hms.emr.patient', '^1.0');
        $this->assertSame('1.2.0', $emr->version());
        $p = $emr->call('getPatient', ['patientId' => 'p-1002'], timeout: 2.0)['patient'];
        $this->assertSame(['patientId' => 'p-1002', 'mrn' => 'MRN-55121', 'givenName' => 'Lars',
            'familyName' => 'Nilsson', 'birthDate' => '1957-11-02', 'sex' => 'male',
            'updatedAtUnixMs' => '1790000000000'], array_diff_key($p, ['allergies' => 1]));
        $p = $emr->call('getPatient', ['patientId' => 'p-1003', 'includeAllergies' => true])['patient'];
        $this->assertSame([['substance' => 'latex', 'severity' => 'mild'],
            ['substance' => 'peanut', 'severity' => 'moderate']], $p['allergies']);
        try {
            $emr->call('getPatient', ['patientId' => 'p-0000']);
            $this->fail('no exception');
        } catch (NotFoundException $e) {
            $this->assertSame('hms.emr.patient', $e->getSource());
            $this->assertSame(['patientId' => 'p-0000'], $e->getDetails());
            $this->assertSame("no patient with id 'p-0000'", $e->getMessage());
        }
        try {
            $emr->call('getPatient', ['patientId' => '']);
            $this->fail('no exception');
        } catch (InvalidArgumentException $e) {
            $this->assertSame('hms.emr.patient', $e->getSource());
            $this->assertSame(['field' => 'patientId'], $e->getDetails());
        }
        $found = $emr->call('searchPatients', ['familyName' => 'Okafor', 'limit' => 1])['patients'];
        $this->assertSame(['p-1001'], array_column($found, 'patientId'));
        $this->assertSame([], $emr->call('searchPatients', ['familyName' => 'Nobody'])['patients'] ?? []);
        $emr->close();
        $client->close();
    }

    /** Runs last: SIGTERM stops HMS-EMR cleanly and it leaves the registry. */
    public function testSigtermStopsGoEmr(): void
    {
        $this->assertSame(0, self::$p->kill(self::$emr, 15));
        $this->assertStringContainsString('hms-emr [go]: stopping', self::$p->log(self::$emr));
        $client = self::$p->connect();
        $this->expectException(NotFoundException::class);
        $client->bind('hms.emr.patient', '^1.0');
    }
}
