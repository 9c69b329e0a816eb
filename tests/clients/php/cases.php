<?php
// php-memcached (libmemcached) against a server: `php cases.php MODE HOST PORT CASE`,
// MODE text or binary (Memcached::OPT_BINARY_PROTOCOL). Clients keep every
// other default (no TCP_NODELAY, poll timeout 5 s, compression above 2,000
// bytes, the php serializer). Prints JSON lines (stig_testkit/clients.py):
// {"check", "ok", "got", "want"}, {"timing", "seconds", "count"}, {"done"}.
declare(strict_types=1);

[, $mode, $host, $port, $case] = $argv + [null, null, null, null, null];
if ($case === null) {
    fwrite(STDERR, "usage: cases.php text|binary HOST PORT CASE\n");
    exit(2);
}
$port = (int) $port;
// A session case holds its output until the end: PHP refuses session
// settings once output began.
if (str_starts_with($case, 'session')) {
    ob_start();
}
const ITEM_LIMIT = 1048576;  // Stig's default --max-item-size
// libmemcached behaviours php-memcached names no constant for: setOption passes
// any other number to memcached_behavior_set (enum memcached_behavior_t).
const IO_MSG_WATERMARK = 22;  // MEMCACHED_BEHAVIOR_IO_MSG_WATERMARK (default 500)
const IO_BYTES_WATERMARK = 23;  // MEMCACHED_BEHAVIOR_IO_BYTES_WATERMARK (default 65,536)

// Warnings are part of what a client shows: collect them instead of printing.
$warnings = [];
set_error_handler(function (int $no, string $text) use (&$warnings): bool {
    $warnings[] = preg_replace('/\(0x[0-9a-f]+\) /', '', $text);
    return true;
});

function emit(array $record): void
{
    echo json_encode($record, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
}

function plain($v)
{
    if (is_string($v) && (strlen($v) > 200 || !preg_match('/^[\x20-\x7e]*$/', $v))) {
        return sprintf('<%d bytes sha1 %s>', strlen($v), substr(sha1($v), 0, 12));
    }
    if (is_array($v)) {
        return array_map('plain', $v);
    }
    return $v;
}

function check(string $what, $got, $want): void
{
    emit(['check' => $what, 'ok' => plain($got) === plain($want), 'got' => plain($got), 'want' => plain($want)]);
}

function timed(string $what, int $count, callable $fn)
{
    $start = hrtime(true);
    $result = $fn();
    emit(['timing' => $what, 'seconds' => (hrtime(true) - $start) / 1e9, 'count' => $count]);
    return $result;
}

function client(array $options = []): Memcached
{
    global $mode, $host, $port;
    $m = new Memcached();
    $m->addServer($host, $port);
    if ($mode === 'binary') {
        $m->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
    }
    foreach ($options as $option => $value) {
        $m->setOption($option, $value);
    }
    return $m;
}

// What the last call said: its result code's name and message.
function outcome(Memcached $m): string
{
    return $m->getResultCode() . ' ' . $m->getResultMessage();
}

// The flags and bytes the server holds for $key (a plain text get of our own).
function raw_get(string $key): ?array
{
    global $host, $port;
    $sock = stream_socket_client("tcp://$host:$port", $errno, $error, 5);
    fwrite($sock, "get $key\r\n");
    $header = fgets($sock);
    if ($header === "END\r\n") {
        return null;
    }
    [, , $flags, $length] = explode(' ', trim($header));
    $value = '';
    while (strlen($value) < (int) $length + 2) {
        $value .= fread($sock, (int) $length + 2 - strlen($value));
    }
    fclose($sock);
    return ['flags' => (int) $flags, 'value' => substr($value, 0, (int) $length)];
}

function multiget_key(int $i): string
{
    return sprintf('multiget:%05d:%s', $i, str_repeat('k', 24));
}

function session_round(array $ini, string $id): array
{
    // One "request" that stores a value, then a second that reads it back, as
    // PHP's session module does under a web SAPI (session.use_cookies off: the CLI
    // sends no headers).
    global $warnings;
    foreach ($ini as $name => $value) {
        ini_set($name, (string) $value);
    }
    $warnings = [];
    session_id($id);
    $started = session_start();
    $_SESSION['n'] = 42;
    $written = session_write_close();
    $_SESSION = [];
    try {
        $again = session_start();
        $read = $_SESSION['n'] ?? null;
        session_write_close();
    } catch (Error $e) {
        $again = 'Error: ' . $e->getMessage();
        $read = null;
    }
    return ['started' => $started, 'written' => $written, 'read back' => $read, 'restarted' => $again, 'warnings' => array_values(array_unique($warnings))];
}

$cases = [];

$cases['basics'] = function (): void {
    // append/prepend refuse to work with compression on (the default): off here.
    $m = client([Memcached::OPT_COMPRESSION => false]);
    check('set', $m->set('b:k', 'v1'), true);
    check('get', $m->get('b:k'), 'v1');
    check('get of a missing key', [$m->get('b:missing'), $m->getResultCode()], [false, Memcached::RES_NOTFOUND]);
    global $mode;
    $exists = $mode === 'binary' ? Memcached::RES_DATA_EXISTS : Memcached::RES_NOTSTORED;
    check('add of a present key', [$m->add('b:k', 'x'), $m->getResultCode()], [false, $exists]);
    check('add of a new key', $m->add('b:new', 'n'), true);
    check('replace of a present key', $m->replace('b:k', 'v2'), true);
    check('replace of a missing key', $m->replace('b:absent', 'x'), false);
    check('append', $m->append('b:k', '-tail'), true);
    check('prepend', $m->prepend('b:k', 'head-'), true);
    check('value after append and prepend', $m->get('b:k'), 'head-v2-tail');
    check('append to a missing key', $m->append('b:absent', 'x'), false);
    check('increment of a missing key', [$m->increment('b:n', 1), $m->getResultCode()], [false, Memcached::RES_NOTFOUND]);
    $m->set('b:n', 10);
    check('increment', $m->increment('b:n', 5), 15);
    check('decrement stops at 0', $m->decrement('b:n', 20), 0);
    check('delete', $m->delete('b:k'), true);
    check('get after delete', $m->get('b:k'), false);
    check('delete of a missing key', [$m->delete('b:k'), $m->getResultCode()], [false, Memcached::RES_NOTFOUND]);
    if ($mode === 'binary') {
        // Creating a counter with an initial value needs the binary protocol.
        check('increment creates with the initial value', $m->increment('b:c', 1, 7), 7);
        check('increment of the created counter', $m->increment('b:c', 1, 7), 8);
    }
    check('compression on refuses append (a warning, no request)', client()->append('b:n', 'x'), null);
};

$cases['cas'] = function (): void {
    $m = client();
    $m->set('c:k', 'v1');
    $first = $m->get('c:k', null, Memcached::GET_EXTENDED);
    check('get with GET_EXTENDED returns the value', $first['value'], 'v1');
    check('and a cas', is_int($first['cas']) && $first['cas'] > 0, true);
    check('cas with that cas', $m->cas($first['cas'], 'c:k', 'v2'), true);
    check('cas again with the old cas', [$m->cas($first['cas'], 'c:k', 'v3'), $m->getResultCode()], [false, Memcached::RES_DATA_EXISTS]);
    check('the value the cas wrote', $m->get('c:k'), 'v2');
    $second = $m->get('c:k', null, Memcached::GET_EXTENDED);
    check('a new cas after the write', $second['cas'] !== $first['cas'], true);
    $m->delete('c:k');
    check('cas of a deleted key', [$m->cas($second['cas'], 'c:k', 'v4'), $m->getResultCode()], [false, Memcached::RES_NOTFOUND]);
    $m->setMulti(['c:a' => 'A', 'c:b' => 'B']);
    $both = $m->getMulti(['c:a', 'c:b'], Memcached::GET_EXTENDED);
    check('getMulti with GET_EXTENDED gives each key a cas', count(array_filter($both, fn($e) => $e['cas'] > 0)), 2);
};

$cases['flags'] = function (): void {
    $doc = ['a' => [1, 2], 's' => 'é', 'n' => null];
    $serializers = ['php' => Memcached::SERIALIZER_PHP, 'igbinary' => Memcached::SERIALIZER_IGBINARY, 'json' => Memcached::SERIALIZER_JSON_ARRAY, 'msgpack' => Memcached::SERIALIZER_MSGPACK];
    $flags = [];
    foreach ($serializers as $name => $serializer) {
        $m = client([Memcached::OPT_SERIALIZER => $serializer]);
        $m->set("f:$name", $doc);
        check("an array through the $name serializer reads back", $m->get("f:$name"), $doc);
        $flags[$name] = raw_get("f:$name")['flags'];
    }
    // php-memcached keeps the value's type in the low 4 bits of the flags.
    check('flags of each serializer', $flags, ['php' => 4, 'igbinary' => 5, 'json' => 6, 'msgpack' => 7]);
    $m = client();
    $values = ['f:int' => 42, 'f:float' => 1.5, 'f:bool' => true, 'f:str' => 'text'];
    $m->setMulti($values);
    check('scalars keep their type', $m->getMulti(array_keys($values)), $values);
    check('flags of int, float, bool, string', array_map(fn($k) => raw_get($k)['flags'], array_keys($values)), [1, 2, 3, 0]);
    $long = str_repeat('compressible ', 1000);
    $m->set('f:zip', $long);
    check('a compressed value reads back', $m->get('f:zip'), $long);
    check('flags of a value compressed with fastlz (above 2,000 bytes: 16 | 64)', raw_get('f:zip')['flags'], 80);
    $user = client([Memcached::OPT_USER_FLAGS => 5]);
    $user->set('f:user', 'u');
    check('user flags go in the upper 16 bits', raw_get('f:user')['flags'], 5 << 16);
};

$cases['limits'] = function (): void {
    $m = client();
    $under = random_bytes(ITEM_LIMIT);  // random: compression does not shrink it
    check('set of a value of exactly the item limit', $m->set('l:under', $under), true);
    check('it reads back whole', $m->get('l:under'), $under);
    $m->set('l:over', 'old');
    check('set of a value one byte over the limit', [$m->set('l:over', random_bytes(ITEM_LIMIT + 1)), outcome($m)], [false, '37 ITEM TOO BIG']);
    check('the key is dropped, as memcached does', $m->get('l:over'), false);
    check('the connection goes on', $m->set('l:after', 'ok'), true);
    check('get after the refusal', $m->get('l:after'), 'ok');
};

$cases['keys'] = function (): void {
    global $mode;
    $m = client();
    $utf8 = 'ключ:日本:🔑';
    $bytes = "bin:\xff\xfe\x80\xc0";
    $spaced = "b k\x00\x01";
    $longest = str_repeat('k', 250);
    check('a 250-byte key', $m->set($longest, 'long'), true);
    check('get of the 250-byte key', $m->get($longest), 'long');
    if ($mode === 'text') {
        // In text mode php-memcached itself refuses any byte outside printable ASCII.
        $refused = [false, '33 A BAD KEY WAS PROVIDED/CHARACTERS OUT OF RANGE'];
        check('a UTF-8 key is refused by the client', [$m->set($utf8, 'x'), outcome($m)], $refused);
        check('a key of non-UTF-8 bytes too', [$m->set($bytes, 'x'), outcome($m)], $refused);
        check('a key with a space too', [$m->set($spaced, 'x'), outcome($m)], $refused);
        return;
    }
    // The binary protocol carries any byte in a key.
    check('set of a UTF-8 key', $m->set($utf8, 'unicode'), true);
    check('get of a UTF-8 key', $m->get($utf8), 'unicode');
    check('set of a key of non-UTF-8 bytes', $m->set($bytes, 'bytes'), true);
    check('get of a key of non-UTF-8 bytes', $m->get($bytes), 'bytes');
    check('set of a key with a space and control bytes', $m->set($spaced, 'spaced'), true);
    check('get of that key', $m->get($spaced), 'spaced');
    check('getMulti of the four', $m->getMulti([$utf8, $bytes, $spaced, $longest]), [$utf8 => 'unicode', $bytes => 'bytes', $spaced => 'spaced', $longest => 'long']);
};

$cases['two_connections'] = function (): void {
    [$writer, $reader] = [client(), client()];
    check('set on one connection', $writer->set('t:k', 'one'), true);
    check('read on the other at once', $reader->get('t:k'), 'one');
    $writer->set('t:n', 7);
    check('a counter set on one, incremented on the other', $reader->increment('t:n', 1), 8);
    $writer->delete('t:k');
    check('a delete on one is seen by the other', $reader->get('t:k'), false);
};

$cases['multiget'] = function (): void {
    global $mode;
    // Text: one `get` line of every key (~400 KB); binary: a GetKQ per key, then a No-op.
    $m = client();
    $keys = array_map('multiget_key', range(0, 9999));
    $got = timed("getMulti of 10000 keys ($mode)", count($keys), fn() => $m->getMulti($keys));
    check('getMulti answered', outcome($m), '0 SUCCESS');
    check('keys answered', is_array($got) ? count($got) : $got, 10000);
    $wrong = 0;
    foreach ($keys as $i => $key) {
        $wrong += (($got[$key] ?? null) === "v$i") ? 0 : 1;
    }
    check('every value read', $wrong, 0);
};

$cases['batch'] = function (): void {
    global $mode;
    $m = client();
    // Each round is a set and a get, each waiting for its reply (defaults: no TCP_NODELAY).
    timed("50 set-and-get rounds ($mode)", 50, function () use ($m) {
        for ($i = 0; $i < 50; $i++) {
            $m->set("round:$i", 'r');
            $m->get("round:$i");
        }
    });
    check('the rounds ended well', outcome($m), '0 SUCCESS');
    // The same gets with OPT_TCP_NODELAY on (off by default).
    $nodelay = client([Memcached::OPT_TCP_NODELAY => true]);
    timed("50 gets with OPT_TCP_NODELAY ($mode)", 50, function () use ($nodelay) {
        for ($i = 0; $i < 50; $i++) {
            $nodelay->get("round:$i");
        }
    });
    check('the gets with TCP_NODELAY ended well', outcome($nodelay), '0 SUCCESS');
    // setMulti is a loop of sets, each waiting for its reply.
    $items = [];
    for ($i = 0; $i < 200; $i++) {
        $items["batch:$i"] = "v$i";
    }
    check('setMulti of 200', timed("setMulti of 200 ($mode)", 200, fn() => $m->setMulti($items)), true);
    // Each add waits for its commit (docs/pov.md): a round trip and a commit each.
    $added = timed("100 adds, one at a time ($mode)", 100, function () use ($m) {
        $n = 0;
        for ($i = 0; $i < 100; $i++) {
            $n += $m->add("add:$i", 'a') ? 1 : 0;
        }
        return $n;
    });
    check('every add stored', $added, 100);
    buffered_sets();
};

// 1,000 buffered sets and a get: part of 'batch', and alone in 'buffered',
// which tests/clients/test_php.py runs against commits slowed to 100 ms.
function buffered_sets(): void
{
    global $mode;
    // The batch API: buffered writes queue the sets in the client and send them
    // when a read needs the connection (or the buffer fills); a get flushes them.
    // libmemcached "purges" once 500 replies are due (or 64 KiB were sent): it
    // reads them with a fixed 50 ms window (not the poll timeout), and a reply
    // later than that closes the socket and aborts PHP on an assertion. A binary
    // Set answers after its commit on Stig (docs/pov.md), which a loaded box
    // stretches past 50 ms: the watermarks are raised past this case's 1,000
    // sets (docs/clients.md, "Timeouts"); their replies are read by the get,
    // each within the poll timeout.
    $buffered = client([
        Memcached::OPT_BUFFER_WRITES => true,
        IO_MSG_WATERMARK => 100000,
        IO_BYTES_WATERMARK => 64 << 20,
    ]);
    $result = timed("1000 buffered sets and a get ($mode)", 1000, function () use ($buffered) {
        for ($i = 0; $i < 1000; $i++) {
            $buffered->set("buffered:$i", "b$i");
        }
        return $buffered->get('buffered:999');
    });
    check('the get after 1000 buffered sets', [$result, outcome($buffered)], ['b999', '0 SUCCESS']);
    $other = client();
    check('another connection reads all 1000 buffered sets', count($other->getMulti(array_map(fn($i) => "buffered:$i", range(0, 999)))), 1000);
}

$cases['buffered'] = function (): void {
    buffered_sets();
};

$cases['ttl'] = function (): void {
    global $mode;
    // Stig refuses a future expiration (--ttl-policy reject): what the client reports.
    $m = client();
    $said = $mode === 'binary' ? '7 UNKNOWN READ FAILURE' : '9 CLIENT ERROR';
    check('set with expiration 60', [$m->set('ttl:k', 'v', 60), outcome($m)], [false, $said]);
    check('nothing stored', $m->get('ttl:k'), false);
    check('add with expiration 60', [$m->add('ttl:k', 'v', 60), outcome($m)], [false, $said]);
    check('setMulti with expiration 60', [$m->setMulti(['ttl:a' => 'a'], 60), outcome($m)], [false, $said]);
    check('the connection goes on', $m->set('ttl:k', 'v'), true);
    check('expiration 0 stores', $m->get('ttl:k'), 'v');
    check('touch with expiration 60', [$m->touch('ttl:k', 60), outcome($m)], [false, $said]);
};

function session_ini(array $extra = []): array
{
    global $mode, $host, $port;
    return $extra + [
        'session.save_handler' => 'memcached',
        'session.save_path' => "$host:$port",
        'session.use_cookies' => '0',
        'session.cache_limiter' => '',
        'memcached.sess_binary_protocol' => $mode === 'binary' ? '1' : '0',
    ];
}

$cases['session'] = function (): void {
    global $mode;
    // Under a web SAPI max_execution_time is 30: the handler's lock is an `add`
    // that expires after it, which Stig refuses: session_start() fails.
    set_time_limit(30);
    $lock = $mode === 'binary' ? 'UNKNOWN READ FAILURE' : 'CLIENT ERROR';
    $web = session_round(session_ini(), 'web' . getmypid());
    check('defaults: session_start() fails to lock', [$web['started'], $web['read back']], [false, null]);
    check('and warns', $web['warnings'][0] ?? null, "session_start(): Failed to write session lock: $lock");
    // With no time limit (the CLI's default) the lock is taken, but the data is
    // written with expiration session.gc_maxlifetime (1440): refused, and
    // session_write_close() still returns true; only a warning says so.
    set_time_limit(0);
    $cli = session_round(session_ini(), 'cli' . getmypid());
    check('no time limit: session_write_close() returns true', [$cli['started'], $cli['written']], [true, true]);
    check('but nothing was written', $cli['read back'], null);
    check('only a warning says so', $cli['warnings'][1] ?? null, 'session_write_close(): Failed to write session data (memcached). Please verify that the current setting of session.save_path is correct (' . session_save_path() . ')');
    // gc_maxlifetime 0 (items written without a TTL) with no time limit works;
    // sessions then never expire and the application removes them.
    $none = session_round(session_ini(['session.gc_maxlifetime' => '0']), 'none' . getmypid());
    check('gc_maxlifetime 0 and no time limit: the session is kept', [$none['read back'], $none['warnings']], [42, []]);
};

$cases['session_ttl_ignored'] = function (): void {
    global $host, $port;
    // Against `stig serve --ttl-policy ignore`: the handler works with every
    // default, and nothing expires: neither sessions nor locks.
    set_time_limit(30);
    $web = session_round(session_ini(), 'ign' . getmypid());
    check('defaults: the session is kept', [$web['started'], $web['read back'], $web['warnings']], [true, 42, []]);
    // A request that dies holding the lock leaves it for good: the session can
    // no longer be opened (memcached would let the lock expire after 30 s).
    $id = 'dead' . getmypid();
    client()->set("memc.sess.key.lock.$id", '1');
    $stuck = session_round(session_ini(), $id);
    check('an abandoned lock keeps the session closed', [$stuck['started'], $stuck['warnings']], [false, [
        'session_start(): Unable to clear session lock record',
        "session_start(): Failed to read session data: memcached (path: $host:$port)",
    ]]);
};

if (!isset($cases[$case])) {
    fwrite(STDERR, "unknown case $case\n");
    exit(2);
}
try {
    $cases[$case]();
} catch (Throwable $e) {
    emit(['error' => "$case: " . get_class($e) . ': ' . $e->getMessage() . ' at line ' . $e->getLine()]);
    exit(1);
}
emit(['done' => $case]);
