<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** UNAVAILABLE (14). */
final class UnavailableException extends HmsException
{
    public const CODE = 14;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
