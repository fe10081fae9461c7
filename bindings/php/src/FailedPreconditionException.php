<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** FAILED_PRECONDITION (9). */
final class FailedPreconditionException extends HmsException
{
    public const CODE = 9;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
