<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** DATA_LOSS (15). */
final class DataLossException extends HmsException
{
    public const CODE = 15;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
