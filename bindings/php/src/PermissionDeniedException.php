<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** PERMISSION_DENIED (7). */
final class PermissionDeniedException extends HmsException
{
    public const CODE = 7;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
