<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** UNAUTHENTICATED (16). */
final class UnauthenticatedException extends HmsException
{
    public const CODE = 16;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
