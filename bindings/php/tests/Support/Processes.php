<?php

declare(strict_types=1);

namespace Hms\Ffi\Tests\Support;

use Hms\Ffi\Client;
use Hms\Ffi\UnavailableException;

/**
 * Real processes for the tests: a broker in a temporary directory, services in C++ and Go, and
 * PHP scripts. Everything started is killed and reaped, and the directory removed, by stopAll().
 * Every wait has a deadline.
 */
final class Processes
{
    public string $dir;
    public string $socket;
    /** @var array<int, array{proc: resource, pid: int, log: string, name: string}> */
    private array $procs = [];

    public function __construct()
    {
        $this->dir = sys_get_temp_dir() . '/hms-php-' . getmypid() . '-' . bin2hex(random_bytes(4));
        mkdir($this->dir . '/state', 0700, true);
        $this->socket = $this->dir . '/broker.sock';
    }

    public static function env(string $name, string $default): string
    {
        $v = getenv($name);
        return $v !== false && $v !== '' ? $v : $default;
    }

    public static function brokerBinary(): string
    {
        return self::env('HMS_FFI_BROKER_BINARY', '/work/main/build/release/broker/hms-ffid');
    }

    public static function cppServiceBinary(): string
    {
        return self::env('HMS_FFI_TEST_SERVICE_BINARY', '/work/main/build/release/tests/hms-ffi-test-service');
    }

    public static function goServiceBinary(): string
    {
        return self::env('HMS_FFI_GO_TEST_SERVICE', '/work/main/build/release/bindings/go/hms-go-test-service');
    }

    public static function goEmrBinary(): string
    {
        return self::env('HMS_FFI_GO_EMR', '/work/main/build/release/bindings/go/hms-emr');
    }

    /** Starts the broker and waits for its socket (10 s). */
    public function startBroker(): void
    {
        $this->start('broker', [self::brokerBinary(), '--socket', $this->socket, '--state-dir', $this->dir . '/state',
            '--log-level', 'warn']);
        $this->waitFor(fn () => file_exists($this->socket), 10.0, 'the broker socket ' . $this->socket);
    }

    /**
     * Starts a process with stdout and stderr to a log file in the temporary directory.
     * @param list<string> $argv
     * @return int its index (for kill(), log(), pid())
     */
    public function start(string $name, array $argv): int
    {
        if (!is_executable($argv[0])) {
            throw new \RuntimeException("$name: no executable at {$argv[0]}");
        }
        $i = count($this->procs);
        $log = sprintf('%s/%02d-%s.log', $this->dir, $i, $name);
        $proc = proc_open($argv, [0 => ['file', '/dev/null', 'r'], 1 => ['file', $log, 'w'], 2 => ['file', $log, 'a']],
            $pipes);
        if (!is_resource($proc)) {
            throw new \RuntimeException("$name: cannot start");
        }
        $this->procs[$i] = ['proc' => $proc, 'pid' => proc_get_status($proc)['pid'], 'log' => $log, 'name' => $name];
        return $i;
    }

    /** Starts a service and waits (20 s) for $readyText in its output. */
    public function startService(string $name, array $argv, string $readyText = 'ready'): int
    {
        $i = $this->start($name, $argv);
        $this->waitFor(function () use ($i, $readyText) {
            if (!$this->running($i)) {
                throw new \RuntimeException("{$this->procs[$i]['name']} exited early: " . $this->log($i));
            }
            return str_contains($this->log($i), $readyText);
        }, 20.0, "'$readyText' from $name");
        return $i;
    }

    public function log(int $i): string
    {
        return (string) @file_get_contents($this->procs[$i]['log']);
    }

    public function pid(int $i): int
    {
        return $this->procs[$i]['pid'];
    }

    public function running(int $i): bool
    {
        if (isset($this->procs[$i]['exit'])) {
            return false;
        }
        $st = proc_get_status($this->procs[$i]['proc']);
        if (!$st['running']) {
            $this->procs[$i]['exit'] = $st; // proc_get_status reports the exit only once
        }
        return $st['running'];
    }

    /** Sends $signal and waits (10 s) for the process to exit; returns its exit code (-1 if killed). */
    public function kill(int $i, int $signal = 15): int
    {
        $p = $this->procs[$i];
        if ($this->running($i)) {
            posix_kill($p['pid'], $signal);
        }
        $this->waitFor(fn () => !$this->running($i), 10.0, "{$p['name']} to exit");
        $st = $this->procs[$i]['exit'];
        return $st['signaled'] ? -1 : $st['exitcode'];
    }

    /** Connects to the broker, retrying on UnavailableException for up to 20 s. */
    public function connect(string $transport = 'auto', array $extra = []): Client
    {
        $deadline = microtime(true) + 20.0;
        while (true) {
            try {
                return Client::connect(['socket_path' => $this->socket, 'name' => 'php-test',
                    'transport' => $transport] + $extra);
            } catch (UnavailableException $e) {
                if (microtime(true) > $deadline) {
                    throw $e;
                }
                usleep(50_000);
            }
        }
    }

    /** Polls $cond until true, or throws after $seconds. */
    public function waitFor(callable $cond, float $seconds, string $what): void
    {
        $deadline = microtime(true) + $seconds;
        while (!$cond()) {
            if (microtime(true) > $deadline) {
                throw new \RuntimeException("timed out after {$seconds}s waiting for $what");
            }
            usleep(20_000);
        }
    }

    /** Kills everything still running (services first, the broker last) and removes the directory. */
    public function stopAll(): void
    {
        foreach (array_reverse(array_keys($this->procs)) as $i) {
            $p = $this->procs[$i];
            if ($this->running($i)) {
                posix_kill($p['pid'], 15);
                $deadline = microtime(true) + 5.0;
                while ($this->running($i) && microtime(true) < $deadline) {
                    usleep(20_000);
                }
                if ($this->running($i)) {
                    posix_kill($p['pid'], 9);
                }
            }
            proc_close($p['proc']);
        }
        $this->procs = [];
        self::rmTree($this->dir);
    }

    private static function rmTree(string $path): void
    {
        if (is_dir($path) && !is_link($path)) {
            foreach (scandir($path) as $e) {
                if ($e !== '.' && $e !== '..') {
                    self::rmTree("$path/$e");
                }
            }
            @rmdir($path);
        } elseif (file_exists($path) || is_link($path)) {
            @unlink($path);
        }
    }
}
