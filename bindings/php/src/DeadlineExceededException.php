<?php

declare(strict_types=1);

namespace Hms\Ffi;

/** DEADLINE_EXCEEDED (4). */
final class DeadlineExceededException extends HmsException
{
    public const CODE = 4;

    /** @param array<string, string> $details */
    public function __construct(string $message, string $source = '', array $details = [], ?\Throwable $previous = null)
    {
        parent::__construct($message, self::CODE, $source, $details, $previous);
    }
}
