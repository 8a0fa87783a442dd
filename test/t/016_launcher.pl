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
#     Someone who does not own the database cannot stop its worker by
#     trying them.
#   - Taking a database out of pgjq.database stops its worker at the reload.
#   - After a restart every database with pgjq has its worker again.
# Every wait is a poll with a deadline; no test sleeps a fixed time, except
# the check that a worker does not linger.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('launcher', conf => {
	'pgjq.database' => 'app',
	'pgjq.naptime' => '200ms',
	'log_min_messages' => 'log' });

# the pids of the workers serving a database, as pg_stat_activity shows them
sub workers_of
{
	my ($db) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '')
		  FROM pg_stat_activity
		 WHERE backend_type = 'pgjq worker' AND datname = '$db'});
}

ok(defined poll_fast($node, 'postgres', q{
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
$node->safe_psql('app', 'CREATE EXTENSION pgjq');
create_queue($node, 'app', 'q');
my $secs = wait_for_worker($node, 'app', 30);
ok(defined $secs, 'pgjq created in app, listed in pgjq.database: a worker serves it, no restart');
note sprintf('worker serving %.2f s after CREATE EXTENSION', $secs // -1);
cmp_ok($secs // 99, '<', 3, 'within 3 seconds');
my $app_pid = worker_pid($node, 'app');
is(workers_of('app'), $app_pid, 'jq_worker_status() names the one worker of app');
$node->wait_for_log(qr/pgjq worker started for database "app"/, $log_offset);
pass('the worker logged its start');

# it does the work: an abandoned one-second lease comes back
enqueue_jobs($node, 'app', 'q', '{}');
lease_and_disconnect($node, 'app', 'q', 1);
ok(defined poll_fast($node, 'app', q{
		SELECT state = 'ready' FROM jq.job WHERE errors IS NOT NULL}, 10),
	'the worker reclaims an expired lease in app');

# --- more databases, by reloading the allow-list ---------------------------------

$node->safe_psql('postgres', 'CREATE DATABASE second');
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->safe_psql('second', 'CREATE EXTENSION pgjq');
is($node->safe_psql('second', 'SELECT worker_pid IS NULL FROM jq.jq_worker_status()'),
	't', 'second, not listed yet, has no worker');
alter_system($node, 'pgjq.database', 'app, second, plain');
ok(defined wait_for_worker($node, 'second', 30),
	'after adding second to pgjq.database and a reload, a worker serves it');

# a listed database without pgjq keeps no worker: the launcher's probe
# exits at once (give it a second)
usleep(1_000_000);
is(workers_of('plain'), '', 'plain, listed but without pgjq, has no worker');

# an empty list: every database with pgjq
alter_system($node, 'pgjq.database', '');
ok(defined wait_for_worker($node, 'postgres', 30),
	'with pgjq.database empty, postgres gets a worker too');
is(workers_of('plain'), '', 'and plain, without pgjq, still none');

# --- DROP EXTENSION and CREATE EXTENSION ----------------------------------------

$log_offset = -s $node->logfile;
my $second_pid = workers_of('second');
$node->safe_psql('second', 'DROP EXTENSION pgjq');
$secs = poll_fast($node, 'postgres', qq{
	SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $second_pid}, 10);
ok(defined $secs, 'DROP EXTENSION pgjq stops the worker of second');
cmp_ok($secs // 99, '<', 2, 'within 2 seconds');
$node->wait_for_log(qr/pgjq worker for database "second" exiting: pgjq is not installed there/,
	$log_offset);
pass('and it said why');
$node->safe_psql('second', 'CREATE EXTENSION pgjq');
ok(defined wait_for_worker($node, 'second', 10),
	'CREATE EXTENSION pgjq again: a worker serves second again');

# --- DDL that needs a database to itself ----------------------------------------

$second_pid = workers_of('second');
$node->safe_psql('postgres', 'CREATE ROLE regress_nobody LOGIN CREATEDB');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE second',
	extra_params => [ '-U', 'regress_nobody' ]);
like($err, qr/must be owner of database second/,
	'DROP DATABASE by someone who does not own it fails');
is(workers_of('second'), $second_pid, 'and leaves the worker alone');
my $t0 = time;
($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE second');
is($rc, 0, 'DROP DATABASE succeeds while a worker serves the database') or diag($err);
cmp_ok(time - $t0, '<', 5, 'promptly');
is($node->safe_psql('postgres', qq{
		SELECT count(*) FROM pg_stat_activity WHERE pid = $second_pid}),
	'0', 'its worker is gone');

$app_pid = workers_of('app');
($rc, $out, $err) = $node->psql('postgres', 'ALTER DATABASE app RENAME TO app2');
is($rc, 0, 'ALTER DATABASE ... RENAME succeeds while a worker serves the database') or diag($err);
ok(defined wait_for_worker($node, 'app2', 15),
	'a worker serves the renamed database again');
isnt(workers_of('app2'), $app_pid, 'a new one');

($rc, $out, $err) = $node->psql('postgres', 'CREATE DATABASE copy TEMPLATE app2');
is($rc, 0, 'CREATE DATABASE ... TEMPLATE succeeds while a worker serves the template')
  or diag($err);
ok(defined wait_for_worker($node, 'app2', 15),
	'the template database is served again');
ok(defined wait_for_worker($node, 'copy', 15),
	'and the copy, which has pgjq, gets its own worker');
is($node->safe_psql('copy', q{SELECT count(*) FROM jq.queue WHERE name = 'q'}),
	'1', 'the copy has the queues of its template');

# --- a database taken out of the allow-list, and a restart ----------------------

my $copy_pid = workers_of('copy');
alter_system($node, 'pgjq.database', 'app2, postgres');
ok(defined poll_fast($node, 'postgres', qq{
		SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $copy_pid}, 10),
	'taking copy out of pgjq.database stops its worker at the reload');
is($node->safe_psql('copy', 'SELECT worker_pid IS NULL FROM jq.jq_worker_status()'),
	't', 'and no other starts there');
alter_system($node, 'pgjq.database', '');

$node->restart;
ok(defined wait_for_worker($node, 'postgres', 30) && defined wait_for_worker($node, 'app2', 30)
	  && defined wait_for_worker($node, 'copy', 30),
	'after a restart, every database with pgjq has its worker again');

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
