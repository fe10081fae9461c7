<?php
// HMS-API in PHP (the seed's §4.2): looks patients up in HMS-EMR through hms.emr.patient, as the
// C++ examples/api_gateway.cpp does, and shows a NOT_FOUND from the service arriving as a PHP
// exception with its source and details.
//
//   php examples/hms_api.php [--socket PATH] [--transport auto|socket|shm]
//
// Exits 0 when everything went as expected, 1 otherwise.

declare(strict_types=1);

require __DIR__ . '/../autoload.php';

use Hms\Ffi\Client;
use Hms\Ffi\HmsException;
use Hms\Ffi\NotFoundException;

function say(string $line): void
{
    echo "hms-api [php]: $line\n";
    flush();
}

$opts = getopt('', ['socket:', 'transport:']);
$ok = true;
try {
    $client = Client::connect([
        'socket_path' => $opts['socket'] ?? null,
        'name' => 'hms-api',
        'transport' => $opts['transport'] ?? 'auto',
        'default_timeout' => 5.0,
    ]);
    $emr = $client->bind('hms.emr.patient', '^1.0');
    say(sprintf('bound hms.emr.patient %s (%s)', $emr->version(),
        $client->usesSharedMemory() ? 'shared memory' : 'Unix socket'));

    foreach (['p-1001', 'p-1003'] as $id) {
        $p = $emr->call('getPatient', ['patientId' => $id, 'includeAllergies' => true])['patient'];
        $n = count($p['allergies'] ?? []);
        say(sprintf('getPatient(%s) -> %s %s, born %s, %d allerg%s', $id, $p['givenName'], $p['familyName'],
            $p['birthDate'], $n, $n === 1 ? 'y' : 'ies'));
    }

    // The NOT_FOUND path: the service's error arrives as a NotFoundException.
    try {
        $emr->call('getPatient', ['patientId' => 'p-9999']);
        say('getPatient(p-9999) -> unexpectedly found');
        $ok = false;
    } catch (NotFoundException $e) {
        say(sprintf('getPatient(p-9999) -> %s (code %d): %s; source %s; details %s', $e->getStatusName(),
            $e->getCode(), $e->getMessage(), $e->getSource(), json_encode($e->getDetails())));
        $ok = $ok && $e->getSource() === 'hms.emr.patient';
    }

    $found = $emr->call('searchPatients', ['familyName' => 'Okafor', 'limit' => 10])['patients'] ?? [];
    say(sprintf('searchPatients(Okafor) -> %d patients: %s', count($found),
        implode(', ', array_map(fn ($p) => $p['patientId'], $found))));
    $ok = $ok && count($found) === 2;

    $emr->close();
    $client->close();
} catch (HmsException $e) {
    say('failed: ' . $e);
    exit(1);
}
say($ok ? 'done' : 'done, but not as expected');
exit($ok ? 0 : 1);
