<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** OUT_OF_RANGE (11). */
final class OutOfRangeException extends HmsException
{
    public const CODE = 11;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
