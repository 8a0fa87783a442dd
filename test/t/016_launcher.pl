# The pgjq launcher: one per cluster, it runs a worker in every database
# where pgjq is installed, with no restart of the server.
#   - pgjq.database names a database that does not exist at start; once it
#     is created and pgjq installed there, a worker serves it within
#     seconds, and jq_worker_status() says so.
#   - A database outside pgjq.database gets no worker, and its status says
#     why; adding it to the list takes a reload, not a restart.
#   - An empty pgjq.database serves every database with pgjq.
#   - A database without pgjq keeps no worker, and nothing is logged at
#     WARNING or above for it.
#   - DROP EXTENSION stops the worker; CREATE EXTENSION brings it back.
#   - DROP DATABASE, ALTER DATABASE ... RENAME and CREATE DATABASE ...
#     TEMPLATE, which need the database to themselves, succeed while a
#     worker runs there; the worker comes back afterwards (in the copy too).
# Every wait is a poll with a deadline; no test sleeps a fixed time, except
# the check that a worker does not linger.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('launcher');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pgjq'
pgjq.database = 'app'
pgjq.naptime = '200ms'
log_min_messages = log
});
$node->start;

# seconds until $query returns 't' in $db, or undef after $limit seconds
sub seconds_until
{
	my ($db, $query, $limit) = @_;
	my $start = time;
	while (time - $start < $limit)
	{
		my ($rc, $out) = $node->psql($db, $query);
		return time - $start if $rc == 0 && $out eq 't';
		usleep(20_000);
	}
	return undef;
}

# the pids of the workers serving a database, as pg_stat_activity shows them
sub workers_of
{
	my ($db) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '')
		  FROM pg_stat_activity
		 WHERE backend_type = 'pgjq worker' AND datname = '$db'});
}

ok(defined seconds_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'pgjq launcher'}, 30),
	'one pgjq launcher runs');
is($node->safe_psql('postgres', q{
		SELECT datname IS NULL FROM pg_stat_activity WHERE backend_type = 'pgjq launcher'}),
	't', 'the launcher is connected to no database');

# --- a database outside pgjq.database --------------------------------------------

$node->safe_psql('postgres', 'CREATE EXTENSION pgjq');
is($node->safe_psql('postgres', 'SELECT databases, worker_pid IS NULL, status FROM jq.jq_worker_status()'),
	'app|t|this database is not in pgjq.database: add it there and reload the configuration',
	'postgres is not in pgjq.database: no worker, and the status says how to add it');

# --- the listed database, created after the start --------------------------------

my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE app');
my $created = time;
$node->safe_psql('app', q{
	CREATE EXTENSION pgjq;
	SELECT 1 FROM jq.jq_create_queue('q');
});
my $secs = seconds_until('app', q{
	SELECT status = 'ok' AND worker_pid IS NOT NULL FROM jq.jq_worker_status()}, 30);
ok(defined $secs, 'pgjq created in app, listed in pgjq.database: a worker serves it, no restart');
note sprintf('worker serving %.2f s after CREATE EXTENSION', $secs // -1);
cmp_ok($secs // 99, '<', 3, 'within 3 seconds');
my $app_pid = $node->safe_psql('app', 'SELECT worker_pid FROM jq.jq_worker_status()');
is(workers_of('app'), $app_pid, 'jq_worker_status() names the one worker of app');
$node->wait_for_log(qr/pgjq worker started for database "app"/, $log_offset);
pass('the worker logged its start');

# it does the work: an abandoned one-second lease comes back
$node->safe_psql('app', q{SELECT jq.jq_enqueue('q', '{}')});
$node->safe_psql('app', q{SELECT 1 FROM jq.jq_dequeue('q', 1, 1)});
ok(defined seconds_until('app', q{
		SELECT state = 'ready' FROM jq.job WHERE errors IS NOT NULL}, 10),
	'the worker reclaims an expired lease in app');

# --- more databases, by reloading the allow-list ---------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE second');
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->safe_psql('second', 'CREATE EXTENSION pgjq');
is($node->safe_psql('second', 'SELECT worker_pid IS NULL FROM jq.jq_worker_status()'),
	't', 'second, not listed yet, has no worker');
$node->safe_psql('postgres', q{ALTER SYSTEM SET pgjq.database = 'app, second, plain'});
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(defined seconds_until('second', q{
		SELECT status = 'ok' AND worker_pid IS NOT NULL FROM jq.jq_worker_status()}, 30),
	'after adding second to pgjq.database and a reload, a worker serves it');

# a listed database without pgjq keeps no worker: the launcher's probe
# exits at once (give it a second)
usleep(1_000_000);
is(workers_of('plain'), '', 'plain, listed but without pgjq, has no worker');

# an empty list: every database with pgjq
$node->safe_psql('postgres', q{ALTER SYSTEM SET pgjq.database = ''});
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok(defined seconds_until('postgres', q{
		SELECT status = 'ok' AND worker_pid IS NOT NULL FROM jq.jq_worker_status()}, 30),
	'with pgjq.database empty, postgres gets a worker too');
is(workers_of('plain'), '', 'and plain, without pgjq, still none');

# --- DROP EXTENSION and CREATE EXTENSION ----------------------------------------

$log_offset = -s $node->logfile;
my $second_pid = workers_of('second');
$node->safe_psql('second', 'DROP EXTENSION pgjq');
$secs = seconds_until('postgres', qq{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $second_pid}, 10);
ok(defined $secs, 'DROP EXTENSION pgjq stops the worker of second');
cmp_ok($secs // 99, '<', 2, 'within 2 seconds');
$node->wait_for_log(qr/pgjq worker for database "second" exiting: pgjq is not installed there/,
	$log_offset);
pass('and it said why');
$node->safe_psql('second', 'CREATE EXTENSION pgjq');
ok(defined seconds_until('second', q{
		SELECT status = 'ok' AND worker_pid IS NOT NULL FROM jq.jq_worker_status()}, 10),
	'CREATE EXTENSION pgjq again: a worker serves second again');

# --- DDL that needs a database to itself ----------------------------------------

$second_pid = workers_of('second');
my $t0 = time;
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE second');
is($rc, 0, 'DROP DATABASE succeeds while a worker serves the database') or diag($err);
cmp_ok(time - $t0, '<', 5, 'promptly');
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM pg_stat_activity WHERE pid = $second_pid}),
	'0', 'its worker is gone');

$app_pid = workers_of('app');
($rc, $out, $err) = $node->psql('postgres', 'ALTER DATABASE app RENAME TO app2');
is($rc, 0, 'ALTER DATABASE ... RENAME succeeds while a worker serves the database') or diag($err);
ok(defined seconds_until('app2', q{
		SELECT status = 'ok' AND worker_pid IS NOT NULL FROM jq.jq_worker_status()}, 15),
	'a worker serves the renamed database again');
isnt(workers_of('app2'), $app_pid, 'a new one');

($rc, $out, $err) = $node->psql('postgres', 'CREATE DATABASE copy TEMPLATE app2');
is($rc, 0, 'CREATE DATABASE ... TEMPLATE succeeds while a worker serves the template')
  or diag($err);
ok(defined seconds_until('app2', q{
		SELECT status = 'ok' AND worker_pid IS NOT NULL FROM jq.jq_worker_status()}, 15),
	'the template database is served again');
ok(defined seconds_until('copy', q{
		SELECT status = 'ok' AND worker_pid IS NOT NULL FROM jq.jq_worker_status()}, 15),
	'and the copy, which has pgjq, gets its own worker');
is($node->safe_psql('copy', q{SELECT count(*) FROM jq.queue WHERE name = 'q'}),
	'1', 'the copy has the queues of its template');

# --- nothing went wrong ----------------------------------------------------------

my $log = slurp_file($node->logfile);
unlike($log, qr/pgjq[^\n]*\b(?:WARNING|ERROR|PANIC):|(?:WARNING|ERROR|PANIC):[^\n]*pgjq/,
	'no pgjq process logged a warning or an error');
is($node->safe_psql('postgres', q{
		SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity
		 WHERE backend_type = 'pgjq worker'}),
	'app2,copy,postgres', 'in the end: one worker per database with pgjq');

$node->stop;
done_testing();
