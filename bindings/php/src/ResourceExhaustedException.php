<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** RESOURCE_EXHAUSTED (8). */
final class ResourceExhaustedException extends HmsException
{
    public const CODE = 8;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
