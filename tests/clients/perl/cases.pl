#!/usr/bin/perl
# Perl clients against a server: `perl cases.pl MODULE HOST PORT CASE`, MODULE
# Cache::Memcached::Fast or Cache::Memcached, each with its defaults (connect
# timeout 0.25 s, I/O timeout 1 s). Prints JSON lines (stig_testkit/clients.py):
# {"check", "ok", "got", "want"}, {"timing", "seconds", "count"}, {"done"}.
use strict;
use warnings;
use Digest::SHA qw(sha1_hex);
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time);

my ($module, $host, $port, $case) = @ARGV;
die "usage: cases.pl MODULE HOST PORT CASE\n" unless defined $case;
eval "require $module; 1" or die $@;
my $fast = $module eq 'Cache::Memcached::Fast';

use constant ITEM_LIMIT => 1048576;    # Stig's default --max-item-size
my $json = JSON::PP->new->canonical->allow_nonref;
$| = 1;

sub emit { print $json->encode($_[0]), "\n" }

# A value as a report shows it: long or non-ASCII byte strings by length and digest.
sub plain {
    my ($v) = @_;
    return $v if ref $v || !defined $v;
    return $v if length($v) <= 200 && $v =~ /^[\x20-\x7e]*$/;
    my $bytes = $v;
    utf8::encode($bytes) if utf8::is_utf8($bytes);
    return sprintf('<%d bytes sha1 %s>', length($bytes), substr(sha1_hex($bytes), 0, 12));
}

sub check {
    my ($what, $got, $want) = @_;
    my ($g, $w) = (plain($got), plain($want));
    my $ok = $json->encode($g) eq $json->encode($w) ? JSON::PP::true : JSON::PP::false;
    emit({check => $what, ok => $ok, got => $g, want => $w});
}

# Seconds `$code` takes, reported as a timing line; returns what it returned (list context).
sub timed {
    my ($what, $count, $code) = @_;
    my $start = time;
    my @result = $code->();
    emit({timing => $what, seconds => time - $start, count => $count});
    return @result;
}

# The module's answer as a report shows it: undef (an error) stays null, a
# false answer is 0, a true one 1 (both modules answer '' or 0 for false).
sub verdict {
    my ($r) = @_;
    return undef unless defined $r;
    return $r ? 1 : 0;
}

sub client {
    my (%extra) = @_;
    return $module->new({servers => ["$host:$port"], %extra});
}

# The flags and bytes the server holds for `key` (a plain text get of our own).
sub raw_get {
    my ($key) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => 'tcp')
      or die "connect: $!";
    binmode $sock;
    print $sock "get $key\r\n";
    my $header = <$sock>;
    return undef if $header eq "END\r\n";
    my (undef, undef, $flags, $length) = split ' ', $header;
    read($sock, my $value, $length + 2) == $length + 2 or die 'short read';
    close $sock;
    return {flags => $flags + 0, value => substr($value, 0, $length)};
}

sub random_bytes {
    my ($n) = @_;
    open my $fh, '<:raw', '/dev/urandom' or die $!;
    read($fh, my $bytes, $n) == $n or die 'short read from /dev/urandom';
    return $bytes;
}

sub multiget_key { sprintf('multiget:%05d:%s', $_[0], 'k' x 24) }

my %cases;

$cases{basics} = sub {
    my $c = client();
    check('set', verdict($c->set('b:k', 'v1')), 1);
    check('get', $c->get('b:k'), 'v1');
    check('get of a missing key', $c->get('b:missing'), undef);
    check('add of a present key', verdict($c->add('b:k', 'x')), 0);
    check('add of a new key', verdict($c->add('b:new', 'n')), 1);
    check('replace of a present key', verdict($c->replace('b:k', 'v2')), 1);
    check('replace of a missing key', verdict($c->replace('b:absent', 'x')), 0);
    check('append', verdict($c->append('b:k', '-tail')), 1);
    check('prepend', verdict($c->prepend('b:k', 'head-')), 1);
    check('value after append and prepend', $c->get('b:k'), 'head-v2-tail');
    check('append to a missing key', verdict($c->append('b:absent', 'x')), 0);
    check('incr of a missing key', verdict($c->incr('b:n', 1)), $fast ? 0 : undef);
    $c->set('b:n', 10);
    check('incr', $c->incr('b:n', 5) + 0, 15);
    check('decr stops at 0', $c->decr('b:n', 20) + 0, 0);
    check('delete', verdict($c->delete('b:k')), 1);
    check('get after delete', $c->get('b:k'), undef);
    check('delete of a missing key', verdict($c->delete('b:k')), 0);
};

$cases{cas} = sub {
    my $c = client();
    $c->set('c:k', 'v1');
    my $first = $c->gets('c:k');
    check('gets returns the value', $first->[1], 'v1');
    check('and a cas', $first->[0] =~ /^[1-9][0-9]*$/ ? 1 : 0, 1);
    check('cas with that cas', verdict($c->cas('c:k', $first->[0], 'v2')), 1);
    check('cas again with the old cas', verdict($c->cas('c:k', $first->[0], 'v3')), 0);
    check('the value the cas wrote', $c->get('c:k'), 'v2');
    my $second = $c->gets('c:k');
    check('a new cas after the write', $second->[0] ne $first->[0] ? 1 : 0, 1);
    $c->delete('c:k');
    check('cas of a deleted key', verdict($c->cas('c:k', $second->[0], 'v4')), 0);
    my %gets = %{$c->gets_multi('c:a', 'c:b')};
    check('gets_multi of missing keys', scalar keys %gets, 0);
};

$cases{flags} = sub {
    my $c = client();
    my $doc = {a => [1, 2], s => 'text'};
    check('set of a reference', verdict($c->set('f:doc', $doc)), 1);
    check('it reads back, thawed', $c->get('f:doc'), $doc);
    check('flags of a serialized value (Storable)', raw_get('f:doc')->{flags}, 1);
    $c->set('f:str', 'text');
    check('flags of a plain string', raw_get('f:str')->{flags}, 0);
    if ($fast) {
        # utf8 => 1 stores character strings as UTF-8 with flag 4 (F_UTF8).
        my $u = client(utf8 => 1);
        my $chars = "\x{43a}\x{43b}\x{44e}\x{447}";    # 'ключ' as characters
        check('set of a character string (utf8 => 1)', verdict($u->set('f:utf8', $chars)), 1);
        check('it reads back as characters', $u->get('f:utf8') eq $chars ? 1 : 0, 1);
        check('flags of a character string', raw_get('f:utf8')->{flags}, 4);
        check('the bytes it stored', raw_get('f:utf8')->{value}, "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87");
        # Compression (off by default): zlib with flag 2 above the threshold.
        my $z = client(compress_threshold => 100);
        my $long = 'z' x 5000;
        $z->set('f:zip', $long);
        check('a compressed value reads back', $z->get('f:zip'), $long);
        check('flags of a compressed value', raw_get('f:zip')->{flags}, 2);
    } else {
        # compress_threshold (off by default): zlib with flag 2 above it.
        my $z = client(compress_threshold => 100);
        my $long = 'z' x 5000;
        $z->set('f:zip', $long);
        check('a compressed value reads back', $z->get('f:zip'), $long);
        check('flags of a compressed value', raw_get('f:zip')->{flags}, 2);
    }
};

$cases{limits} = sub {
    my $c = client();
    my $under = random_bytes(ITEM_LIMIT);
    check('set of a value of exactly the item limit', verdict($c->set('l:under', $under)), 1);
    check('it reads back whole', $c->get('l:under'), $under);
    $c->set('l:over', 'old');
    my $over = random_bytes(ITEM_LIMIT + 1);
    if ($fast) {
        # max_size (1 MiB) stops it in the client: nothing is sent.
        check('the client refuses a value over max_size itself', verdict($c->set('l:over', $over)), undef);
        check('the old value stays (the server saw nothing)', $c->get('l:over'), 'old');
    } else {
        check('the server refuses a value one byte over the limit', verdict($c->set('l:over', $over)), 0);
        check('and drops the key, as memcached does', $c->get('l:over'), undef);
    }
    check('the connection goes on', verdict($c->set('l:after', 'ok')), 1);
    check('get after the refusal', $c->get('l:after'), 'ok');
};

$cases{keys} = sub {
    my $c = client();
    my $utf8 = "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87:\xe6\x97\xa5\xe6\x9c\xac:\xf0\x9f\x94\x91";    # UTF-8 bytes
    check('set of a UTF-8 key', verdict($c->set($utf8, 'unicode')), 1);
    check('get of a UTF-8 key', $c->get($utf8), 'unicode');
    check('the server holds it under those bytes', raw_get($utf8)->{value}, 'unicode');
    # The text protocol takes any byte in a key but spaces and control characters.
    my $binary = "bin:\xff\xfe\x80\xc0";
    check('set of a key of non-UTF-8 bytes', verdict($c->set($binary, 'bytes')), 1);
    check('get of a key of non-UTF-8 bytes', $c->get($binary), 'bytes');
    my $longest = 'k' x 250;
    check('a 250-byte key', verdict($c->set($longest, 'long')), 1);
    check('get of the 250-byte key', $c->get($longest), 'long');
    check('get_multi of all three', $c->get_multi($utf8, $binary, $longest),
        {$utf8 => 'unicode', $binary => 'bytes', $longest => 'long'});
};

$cases{two_connections} = sub {
    my ($writer, $reader) = (client(), client());
    check('set on one connection', verdict($writer->set('t:k', 'one')), 1);
    check('read on the other at once', $reader->get('t:k'), 'one');
    $writer->set('t:n', 7);
    check('a counter set on one, incremented on the other', $reader->incr('t:n', 1) + 0, 8);
    $writer->delete('t:k');
    check('a delete on one is seen by the other', $reader->get('t:k'), undef);
};

$cases{multiget} = sub {
    # get_multi sends every key in one `get` line (~400 KB for these keys).
    my $c = client();
    my @keys = map { multiget_key($_) } 0 .. 9999;
    my ($got) = timed('get_multi of 10000 keys', scalar @keys, sub { $c->get_multi(@keys) });
    check('keys answered', scalar keys %$got, 10000);
    my $wrong = grep { ($got->{$keys[$_]} // '') ne "v$_" } 0 .. $#keys;
    check('every value read', $wrong, 0);
};

$cases{batch} = sub {
    # Cache::Memcached::Fast's batch API: the *_multi commands pipeline one
    # command per key and read the replies after.
    my $c = client();
    my @sets = map { ["batch:$_", "v$_"] } 0 .. 999;
    my @set_results = timed('set_multi of 1000', 1000, sub { $c->set_multi(@sets) });
    check('set_multi reports every set stored', scalar(grep { $_ } @set_results), 1000);
    my @adds = map { ["batch:add:$_", "a$_"] } 0 .. 2999;
    my @add_results = timed('add_multi of 3000 new keys', 3000, sub { $c->add_multi(@adds) });
    check('add_multi reports every add stored', scalar(grep { $_ } @add_results), 3000);
    my @again = $c->add_multi(@adds);
    check('add_multi of the same keys again reports none', scalar(grep { $_ } @again), 0);
    my $other = client();
    my %read = %{$other->get_multi(map { $_->[0] } @sets, @adds)};
    check('another connection reads all 4000', scalar keys %read, 4000);
    # nowait: sets in void context are sent without waiting for their replies.
    my $nowait = client(nowait => 1);
    timed('1000 nowait sets', 1000, sub { $nowait->set("batch:nowait:$_", $_) for 0 .. 999; $nowait->nowait_push; });
    check('the nowait sets are read back', scalar keys %{$nowait->get_multi(map { "batch:nowait:$_" } 0 .. 999)}, 1000);
};

$cases{ttl} = sub {
    # Stig refuses a future exptime (--ttl-policy reject): what the module reports.
    my $c = client();
    check('set with expiration 60', verdict($c->set('ttl:k', 'v', 60)), $fast ? undef : 0);
    check('nothing stored', $c->get('ttl:k'), undef);
    check('add with expiration 60', verdict($c->add('ttl:k', 'v', 60)), $fast ? undef : 0);
    check('the connection goes on', verdict($c->set('ttl:k', 'v')), 1);
    check('no expiration stores', $c->get('ttl:k'), 'v');
    if ($fast) {
        check('touch with expiration 60', verdict($c->touch('ttl:k', 60)), undef);
        check('the item is still there', $c->get('ttl:k'), 'v');
    }
};

my $run = $cases{$case} or die "unknown case $case\n";
eval { $run->(); 1 } or do { emit({error => "$case: $@"}); exit 1 };
emit({done => $case});
