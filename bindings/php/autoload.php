<?php

// A PSR-4 autoloader for Hms\Ffi\ when Composer is not used: require this file.
spl_autoload_register(static function (string $class): void {
    $prefix = 'Hms\\Ffi\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
