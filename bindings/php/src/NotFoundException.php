<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** NOT_FOUND (5). */
final class NotFoundException extends HmsException
{
    public const CODE = 5;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
