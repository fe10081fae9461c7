<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** ALREADY_EXISTS (6). */
final class AlreadyExistsException extends HmsException
{
    public const CODE = 6;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
