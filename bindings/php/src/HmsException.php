<?php

declare(strict_types=1);

namespace Hms\Ffi;

/**
 * Every failure of a call, bind or connect (the seed's §8.1/§8.2): getCode() is the gRPC status
 * code (5 for NOT_FOUND, ...), getStatusName() its name, getSource() the id of the service that
 * returned the error ("" when the library or the broker did), getDetails() its key/value details.
 *
 * Each code has its subclass (NotFoundException, UnavailableException, ...), so
 * `catch (NotFoundException $e)` picks one code and `catch (HmsException $e)` all of them.
 */
class HmsException extends \RuntimeException
{
    /** The subclass per gRPC code. */
    public const CLASSES = [
        1 => CancelledException::class,
        2 => UnknownException::class,
        3 => InvalidArgumentException::class,
        4 => DeadlineExceededException::class,
        5 => NotFoundException::class,
        6 => AlreadyExistsException::class,
        7 => PermissionDeniedException::class,
        8 => ResourceExhaustedException::class,
        9 => FailedPreconditionException::class,
        10 => AbortedException::class,
        11 => OutOfRangeException::class,
        12 => UnimplementedException::class,
        13 => InternalException::class,
        14 => UnavailableException::class,
        15 => DataLossException::class,
        16 => UnauthenticatedException::class,
    ];

    public const NAMES = [
        0 => 'OK', 1 => 'CANCELLED', 2 => 'UNKNOWN', 3 => 'INVALID_ARGUMENT', 4 => 'DEADLINE_EXCEEDED',
        5 => 'NOT_FOUND', 6 => 'ALREADY_EXISTS', 7 => 'PERMISSION_DENIED', 8 => 'RESOURCE_EXHAUSTED',
        9 => 'FAILED_PRECONDITION', 10 => 'ABORTED', 11 => 'OUT_OF_RANGE', 12 => 'UNIMPLEMENTED',
        13 => 'INTERNAL', 14 => 'UNAVAILABLE', 15 => 'DATA_LOSS', 16 => 'UNAUTHENTICATED',
    ];

    private string $source;
    /** @var array<string, string> */
    private array $details;

    /** @param array<string, string> $details */
    public function __construct(string $message, int $code = 2, string $source = '', array $details = [],
                                ?\Throwable $previous = null)
    {
        parent::__construct($message, $code, $previous);
        $this->source = $source;
        $this->details = $details;
    }

    /** The exception of the right subclass for a status code (UnknownException outside 1..16). */
    public static function fromStatus(int $code, string $message, string $source = '', array $details = []): self
    {
        $class = self::CLASSES[$code] ?? null;
        if ($class === null) {
            return new self($message, $code, $source, $details);
        }
        return new $class($message, $source, $details);
    }

    /** The service id that returned the error; "" when the library or the broker did. */
    public function getSource(): string
    {
        return $this->source;
    }

    /** @return array<string, string> e.g. ['field' => 'patientId'] */
    public function getDetails(): array
    {
        return $this->details;
    }

    /** "NOT_FOUND", ... */
    public function getStatusName(): string
    {
        return self::NAMES[$this->getCode()] ?? 'UNKNOWN';
    }

    public function __toString(): string
    {
        $s = static::class . ': ' . $this->getStatusName() . ': ' . $this->getMessage();
        if ($this->source !== '') {
            $s .= " (from {$this->source})";
        }
        if ($this->details) {
            $s .= ' ' . json_encode($this->details, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        }
        return $s;
    }
}
