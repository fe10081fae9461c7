<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** INVALID_ARGUMENT (3). */
final class InvalidArgumentException extends HmsException
{
    public const CODE = 3;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
