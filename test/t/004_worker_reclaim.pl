# The pgjq background worker's lease reclaim, and the worker's life cycle.
#   - jq.jq_worker_status() reports the preloaded worker, which shows in
#     pg_stat_activity as backend_type 'pgjq worker'.
#   - A lease whose holder went away comes back to ready within one
#     naptime of its expiry ("lease expired", one attempt counted), and the
#     old token is refused from then on; on the last attempt the job goes to
#     the dead letters instead.  More expired leases than pgjq.reclaim_batch
#     are all reclaimed in one pass.
#   - A worker killed with pg_terminate_backend is started again by the
#     launcher, and reclaims what expired while it was down.
#   - pgjq.naptime follows ALTER SYSTEM + pg_reload_conf(): the worker takes
#     the new value, and the SIGHUP wakes it from a long sleep.
#   - A fast shutdown stops the worker promptly, even in a long sleep.
#   (The launcher's part, databases with and without pgjq, is 016_launcher.pl.)
#   - Without shared_preload_libraries the queue works, and
#     jq.jq_worker_status() says nobody reclaims leases.  (Skipped while
#     loading pgjq without preloading fails with FATAL: a known bug.)
# Every wait is a poll with a deadline; no test sleeps a fixed time.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $naptime = 0.2;    # seconds; pgjq.naptime of the main node
# allowance for scheduling, psql start-up and polling on a busy machine
my $slack = 1.0;

# reclaim_delay(NODE, DB, ID, EXPIRES): seconds between the lease expiry and
# the reclaim, from the time the worker wrote into the job's errors
sub reclaim_delay
{
	my ($node, $db, $id, $expires) = @_;
	return $node->safe_psql($db, qq{
		SELECT extract(epoch FROM (errors -> -1 ->> 'at')::timestamptz) - $expires
		  FROM jq.job WHERE id = $id});
}

# idle_for(PID, CONDITION): SQL for the seconds since backend PID last
# changed its pg_stat_activity state, followed by CONDITION.  The worker
# does at every step of a pass, so this stays below a naptime while it loops.
sub idle_for
{
	my ($pid, $cond) = @_;
	$cond = '' unless defined $cond;
	return qq{SELECT extract(epoch FROM clock_timestamp() - state_change) $cond
	            FROM pg_stat_activity WHERE pid = $pid};
}

my $node = new_node('reclaim', extension => 1, conf => {
	'pgjq.database' => 'postgres',
	'pgjq.naptime' => int($naptime * 1000) . 'ms',
	'pgjq.reclaim_batch' => 10 });
create_queue($node, 'postgres', 'rq');
create_queue($node, 'postgres', 'dlq', max_attempts => 1);

# --- the worker runs ---------------------------------------------------------

ok(defined wait_for_worker($node, 'postgres'), 'jq.jq_worker_status() reports a worker pid');
is( $node->safe_psql('postgres',
		'SELECT preloaded, databases, status FROM jq.jq_worker_status()'),
	't|postgres|ok',
	'jq.jq_worker_status(): preloaded, serving postgres, status ok');
my $pid = worker_pid($node, 'postgres');
is( $node->safe_psql('postgres', qq{
		SELECT backend_type || ',' || datname || ',' || application_name
		  FROM pg_stat_activity WHERE pid = $pid}),
	'pgjq worker,postgres,pgjq worker',
	'the pid is a "pgjq worker" backend of database postgres in pg_stat_activity');

# --- an abandoned lease comes back -------------------------------------------

my $id = $node->safe_psql('postgres', q{SELECT jq.jq_enqueue('rq', '{"n": 1}')});
my ($lid, $token, $expires) = lease_and_disconnect($node, 'postgres', 'rq', 2);
is($lid, $id, 'a session leases the job for 2 seconds and disconnects');
my $leased_at = $expires - 2;
is($node->safe_psql('postgres', "SELECT state FROM jq.jq_result($id)"),
	'leased', 'the job stays leased after its holder left');

my $waited = poll_fast($node, 'postgres',
	"SELECT state = 'ready' FROM jq.jq_result($id)", 30);
ok(defined $waited, 'the expired lease is reclaimed: the job is ready again');
my $ready_after = time - $leased_at;
my $delay = reclaim_delay($node, 'postgres', $id, $expires);
note sprintf('ready %.3f s after the lease was taken; reclaimed %.3f s after expiry',
	$ready_after, $delay);
cmp_ok($ready_after, '<', 2 + $naptime + $slack,
	'ready within lease (2 s) + one naptime (+ slack) of the lease being taken');
cmp_ok($delay, '>=', 0, 'not reclaimed before the lease expired');
cmp_ok($delay, '<', $naptime + 0.5, 'reclaimed within one naptime of the expiry');
is( $node->safe_psql('postgres',
		"SELECT state, last_error, attempts FROM jq.jq_result($id)"),
	'ready|lease expired|1',
	'jq_result: ready, last_error "lease expired", one attempt');

# the old token is refused once the lease is gone
is($node->safe_psql('postgres', "SELECT jq.jq_ack($id, $token)"),
	'f', 'the old token cannot ack the reclaimed job');
is($node->safe_psql('postgres', "SELECT jq.jq_extend($id, $token) IS NULL"),
	't', 'nor extend its lease');
is($node->safe_psql('postgres', "SELECT jq.jq_fail($id, $token, 'late') IS NULL"),
	't', 'nor fail it');
is( $node->safe_psql('postgres',
		"SELECT state, last_error, attempts FROM jq.jq_result($id)"),
	'ready|lease expired|1',
	'the refused calls changed nothing');

# ... also when another worker holds the job now
my ($id2, $token2, $attempt2) = split /\|/,
  $node->safe_psql('postgres', q{
	CREATE TABLE second_lease AS
	    SELECT job_id, lease_token, attempt FROM jq.jq_dequeue('rq', 1);
	SELECT job_id, lease_token, attempt FROM second_lease});
is("$id2,$attempt2", "$id,2", 'another worker leases the job again: attempt 2');
isnt($token2, $token, 'with a new token');
is( $node->safe_psql('postgres', qq{
		SELECT jq.jq_ack($id, $token)::text || ','
		    || (jq.jq_extend($id, $token) IS NULL)::text || ','
		    || (jq.jq_fail($id, $token, 'late') IS NULL)::text}),
	'false,true,true',
	'the old token is refused by jq_ack, jq_extend and jq_fail while the new lease stands');
is($node->safe_psql('postgres', "SELECT jq.jq_ack($id, $token2)"),
	't', 'the new token completes the job');
is($node->safe_psql('postgres', "SELECT state, attempts FROM jq.jq_result($id)"),
	'succeeded|2', 'succeeded after two attempts');

# --- an expired lease on the last attempt is a dead letter --------------------

my $did = $node->safe_psql('postgres', q{SELECT jq.jq_enqueue('dlq', '{"n": 2}')});
my ($dlid, $dtoken, $dexpires) = lease_and_disconnect($node, 'postgres', 'dlq', 1);
is($dlid, $did, 'a job with max_attempts 1 is leased for 1 second and abandoned');
ok( defined poll_fast($node, 'postgres',
		"SELECT EXISTS (SELECT FROM jq.dead_letter WHERE job_id = $did)", 30),
	'its expired lease sends it to jq.dead_letter');
is( $node->safe_psql('postgres', qq{
		SELECT queue, attempts, last_error, jsonb_array_length(errors)
		  FROM jq.dead_letter WHERE job_id = $did}),
	'dlq|1|lease expired|1',
	'dead letter: queue dlq, one attempt, last_error "lease expired"');
is( $node->safe_psql('postgres', qq{
		SELECT (SELECT state FROM jq.jq_result($did)) || ','
		    || (SELECT count(*) FROM jq.job WHERE id = $did)}),
	'dead,0', 'jq_result says dead, and the job left the hot table');
is($node->safe_psql('postgres', "SELECT jq.jq_ack($did, $dtoken)"),
	'f', 'the dead job\'s token is refused');

# --- more expired leases than pgjq.reclaim_batch ------------------------------

create_queue($node, 'postgres', 'bulk');
enqueue_jobs($node, 'postgres', 'bulk', map { qq({"n": $_}) } 1 .. 25);
$node->safe_psql('postgres', q{
	CREATE TABLE bulk_leases AS
	    SELECT job_id, lease_token, lease_expires_at FROM jq.jq_dequeue('bulk', 25, 1);
});
ok( defined poll_fast($node, 'postgres', q{
		SELECT count(*) = 25 FROM jq.job j JOIN bulk_leases l ON l.job_id = j.id
		 WHERE j.state = 'r'}, 30),
	'25 expired leases (pgjq.reclaim_batch = 10) are all reclaimed');
my $bulk_delay = $node->safe_psql('postgres', q{
	SELECT max(extract(epoch FROM (j.errors -> -1 ->> 'at')::timestamptz
	                              - l.lease_expires_at))
	  FROM jq.job j JOIN bulk_leases l ON l.job_id = j.id});
note sprintf('the last of the 25 was reclaimed %.3f s after expiry', $bulk_delay);
cmp_ok($bulk_delay, '<', $naptime + 0.5,
	'all 25 within one naptime of their expiry, in one pass of three batches');

# --- the worker is killed and restarted --------------------------------------

# a lease that expires while the worker is down
$node->safe_psql('postgres', q{SELECT jq.jq_enqueue('rq', '{"n": 3}')});
my ($kid, $ktoken, $kexpires) = lease_and_disconnect($node, 'postgres', 'rq', 1);

my $log_offset = -s $node->logfile;
my $killed_at = time;
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"),
	't', 'pg_terminate_backend() on the worker');
ok($node->poll_query_until('postgres',
		'SELECT worker_pid IS NULL FROM jq.jq_worker_status()'),
	'the worker is gone');
like($node->safe_psql('postgres', 'SELECT status FROM jq.jq_worker_status()'),
	qr/^(no pgjq worker runs in this database at the moment|the pgjq worker of this database stopped); the launcher starts/,
	'jq.jq_worker_status() says no worker runs, and that the launcher starts one');

# the lease runs out while nobody reclaims
ok( defined poll_fast($node, 'postgres', qq{
		SELECT clock_timestamp() > to_timestamp($kexpires) + interval '0.3 s'}, 30),
	'the lease expires while the worker is down');
is( $node->safe_psql('postgres', qq{
		SELECT (w.worker_pid IS NULL)::text || ',' || r.state
		  FROM jq.jq_worker_status() w, jq.jq_result($kid) r}),
	'true,leased',
	'with no worker, the expired lease stays leased');

ok( $node->poll_query_until('postgres', qq{
		SELECT worker_pid IS NOT NULL AND worker_pid <> $pid FROM jq.jq_worker_status()}),
	'the launcher starts a new worker');
my $restart_secs = time - $killed_at;
note sprintf('new worker %.1f s after the kill (restarted after 5 s)',
	$restart_secs);
cmp_ok($restart_secs, '<', 10, 'the worker is back within 10 s');
my $newpid = worker_pid($node, 'postgres');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM pg_stat_activity
		 WHERE backend_type = 'pgjq worker' AND pid = $newpid}),
	'1', 'the new worker shows in pg_stat_activity');
is($node->safe_psql('postgres', 'SELECT status FROM jq.jq_worker_status()'),
	'ok', 'jq.jq_worker_status() is ok again');
$node->wait_for_log(qr/pgjq worker started for database "postgres"/, $log_offset);
pass('the new worker logged its start');

ok( defined poll_fast($node, 'postgres',
		"SELECT state = 'ready' FROM jq.jq_result($kid)", 10),
	'the restarted worker reclaims the lease that expired while it was down');
is( $node->safe_psql('postgres', "SELECT last_error, attempts FROM jq.jq_result($kid)"),
	'lease expired|1', 'as an expired lease, after one attempt');

# a lease taken after the restart
my ($rid, $rtoken, $rexpires) = lease_and_disconnect($node, 'postgres', 'rq', 1);
ok( defined poll_fast($node, 'postgres',
		"SELECT state = 'ready' FROM jq.jq_result($rid)", 30),
	'a lease taken after the restart is reclaimed too');
cmp_ok(time - ($rexpires - 1), '<', 1 + $naptime + $slack,
	'within lease + one naptime (+ slack)');

# --- SIGHUP: pgjq.naptime follows the configuration ---------------------------

# Nothing is leased or scheduled now, so the worker sleeps a full naptime
# between passes; a long naptime shows as a pg_stat_activity state that
# stops changing.
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM jq.job WHERE state IN ('l', 's')}),
	'0', 'no lease or scheduled job is pending');
cmp_ok($node->safe_psql('postgres', idle_for($newpid)),
	'<', $naptime + 0.5, 'with a 200 ms naptime the worker makes a pass every naptime');

alter_system($node, 'pgjq.naptime', '60s');
ok($node->poll_query_until('postgres', 'SHOW pgjq.naptime', '1min'),
	'after ALTER SYSTEM and pg_reload_conf(), a new session shows pgjq.naptime = 1min');
ok( $node->poll_query_until('postgres',
		idle_for($newpid, '> 1.5')),
	'the worker took the new naptime: no pass for over 1.5 s (7 old naptimes)');

# a lease taken now expires during the long sleep ...
my ($hid, $htoken, $hexpires) = lease_and_disconnect($node, 'postgres', 'rq', 1);
ok( defined poll_fast($node, 'postgres', qq{
		SELECT clock_timestamp() > to_timestamp($hexpires) + interval '1 s'}, 30),
	'a 1 s lease taken during the long sleep expires');
is($node->safe_psql('postgres', "SELECT state FROM jq.jq_result($hid)"),
	'leased', 'and stays leased one second (5 old naptimes) past its expiry');

# ... and the SIGHUP that brings the naptime back wakes the worker at once
alter_system($node, 'pgjq.naptime', undef);
my $reload_at = time;
ok( defined poll_fast($node, 'postgres',
		"SELECT state = 'ready' FROM jq.jq_result($hid)", 30),
	'after the naptime is reset and reloaded, the worker reclaims the lease');
my $after_reload = time - $reload_at;
note sprintf('reclaimed %.3f s after pg_reload_conf()', $after_reload);
cmp_ok($after_reload, '<', 5,
	'within seconds of the reload, not at the end of the 60 s sleep');
is($node->safe_psql('postgres', 'SHOW pgjq.naptime'),
	'200ms', 'a new session shows pgjq.naptime = 200ms again');
is(worker_pid($node, 'postgres'), $newpid, 'the same worker kept running through the reloads');
ok( $node->poll_query_until('postgres',
		idle_for($newpid, "< $naptime + 0.5")),
	'and it makes a pass every 200 ms again');

# --- SIGTERM: a fast shutdown does not wait for the worker's sleep -----------

alter_system($node, 'pgjq.naptime', '60s');
ok( $node->poll_query_until('postgres',
		idle_for($newpid, '> 1')),
	'the worker is in a 60 s sleep');
my $stop_start = time;
$node->stop('fast');
my $stop_secs = time - $stop_start;
note sprintf('fast shutdown took %.2f s', $stop_secs);
cmp_ok($stop_secs, '<', 10, 'a fast shutdown with the worker asleep takes under 10 s');
unlike(
	slurp_file($node->logfile, $log_offset),
	qr/\[$newpid\] pgjq worker (?:PANIC|ERROR)/,
	'the worker logged no error');

# --- without shared_preload_libraries ----------------------------------------

my $plain = PostgreSQL::Test::Cluster->new('nopreload');
$plain->init;
$plain->start;
my ($create_rc, $create_out, $create_err) =
  $plain->psql('postgres', 'CREATE EXTENSION pgjq');

{
	# pgjq.database is defined only while preloading: a PGC_POSTMASTER
	# variable defined later would end the session with FATAL
	unlike($create_err, qr/FATAL/, 'loading pgjq without preloading is not fatal');
	is($create_rc, 0, 'without preloading, CREATE EXTENSION pgjq works');

	create_queue($plain, 'postgres', 'pq');
	$plain->safe_psql('postgres', q{SELECT jq.jq_enqueue('pq', '{"n": 1}')});
	my ($pid_p, $tok_p) = split /\|/,
	  $plain->safe_psql('postgres',
		q{SELECT job_id, lease_token FROM jq.jq_dequeue('pq', 1)});
	is($plain->safe_psql('postgres', "SELECT jq.jq_ack($pid_p, $tok_p, '{\"ok\": true}')"),
		't', 'without preloading: enqueue, dequeue and ack work');
	is($plain->safe_psql('postgres', "SELECT state, result FROM jq.jq_result($pid_p)"),
		'succeeded|{"ok": true}', 'and the result is kept');
	is( $plain->safe_psql('postgres',
			'SELECT preloaded, worker_pid IS NULL, status FROM jq.jq_worker_status()'),
		'f|t|pgjq is not in shared_preload_libraries: no lease reclaim, no promotion of due jobs, no wakeups',
		'jq.jq_worker_status(): not preloaded, no worker, and a status saying so');
	is( $plain->safe_psql('postgres', q{
			SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgjq worker'}),
		'0', 'no pgjq worker runs');
	is( $plain->safe_psql('postgres', q{
			SELECT 1 FROM jq.jq_worker_status(); SHOW pgjq.naptime}),
		"1\n1s", 'once pgjq is loaded, pgjq.naptime shows its default, 1s');

	# nobody reclaims expired leases, but jq.reclaim_expired_leases() can
	$plain->safe_psql('postgres', q{SELECT jq.jq_enqueue('pq', '{"n": 2}')});
	my ($xid, $xtoken, $xexpires) = lease_and_disconnect($plain, 'postgres', 'pq', 1);
	ok( defined poll_fast($plain, 'postgres', qq{
			SELECT clock_timestamp() > to_timestamp($xexpires) + interval '0.5 s'}, 30),
		'a 1 s lease expires');
	is($plain->safe_psql('postgres', "SELECT state FROM jq.jq_result($xid)"),
		'leased', 'without the worker the expired lease stays leased');
	is($plain->safe_psql('postgres', 'SELECT jq.reclaim_expired_leases()'),
		'1', 'jq.reclaim_expired_leases() reclaims it by hand');
	is( $plain->safe_psql('postgres',
			"SELECT state, last_error, attempts FROM jq.jq_result($xid)"),
		'ready|lease expired|1', 'back to ready as an expired lease');
}
$plain->stop;

done_testing();
