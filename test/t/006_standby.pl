# The pgjq worker and streaming replication.
#   - On a hot standby (same shared_preload_libraries as its primary) no
#     pgjq worker runs: pg_stat_activity shows none, jq.jq_worker_status() has
#     no worker pid, and an expired lease replicated from the primary stays
#     leased.
#   - On the standby the analysts' views are readable: jq.queue_stats counts
#     the jobs in each state from the tables (the shared counters are the
#     primary's), jq_result, key_stats, usage and batch_progress answer, and
#     every call that changes jobs or queues fails with 25006.
#   - After promotion the worker starts on the new primary and reclaims
#     that lease within seconds; enqueue, dequeue and ack work there.
# To keep the primary's own worker from reclaiming the expired lease before
# the failover, a session on the primary holds the job's row lock (the
# reclaim skips locked rows), and the primary is stopped in immediate mode,
# as a failed primary would be.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $primary = new_node('primary', extension => 1,
	init => { allows_streaming => 1 },
	conf => { 'pgjq.naptime' => '200ms' });
create_queue($primary, 'postgres', 'sq');
ok(defined wait_for_worker($primary, 'postgres'), 'the primary runs a pgjq worker');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	't', 'the standby is in recovery');
is($standby->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'pgjq', 'and preloads pgjq like its primary');

# --- an expired lease on the primary, replicated --------------------------------

my $id = $primary->safe_psql('postgres', q{SELECT jq.jq_enqueue('sq', '{"n": 1}')});
my ($lid) = lease_and_disconnect($primary, 'postgres', 'sq', 2);
is($lid, $id, 'on the primary a job is leased for 2 seconds, in autocommit');

my $holder = $primary->background_psql('postgres');
is( $holder->query_safe(qq{
		BEGIN;
		SELECT state::text || ',' || (clock_timestamp() < lease_expires_at)
		  FROM jq.job WHERE id = $id FOR UPDATE;}),
	'l,true',
	'a session on the primary locks the job\'s row before the lease expires');
$primary->wait_for_catchup($standby);

ok( $standby->poll_query_until('postgres', qq{
		SELECT clock_timestamp() > lease_expires_at + interval '1 s'
		  FROM jq.job WHERE id = $id}),
	'the lease has been expired for a second (5 naptimes)');
is( $standby->safe_psql('postgres', qq{
		SELECT j.state::text || ',' || r.state || ',' || j.attempt
		  FROM jq.job j, jq.jq_result($id) r WHERE j.id = $id}),
	'l,leased,1',
	'on the standby the expired lease stays leased');
is( $standby->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgjq worker'}),
	'0', 'no pgjq worker runs on the standby');
is( $standby->safe_psql('postgres',
		'SELECT preloaded, worker_pid IS NULL FROM jq.jq_worker_status()'),
	't|t', 'jq.jq_worker_status() on the standby: preloaded, no worker pid');
is($primary->safe_psql('postgres', "SELECT state FROM jq.job WHERE id = $id"),
	'l', 'on the primary too the locked job is still leased');
unlike(slurp_file($standby->logfile), qr/pgjq worker started/,
	'the standby never started a pgjq worker');

# --- the standby's views and writes --------------------------------------------------

# a queue of its own, so that the failover below sees only its job
create_queue($primary, 'postgres', 'sv');
$primary->safe_psql('postgres', q{SELECT count(jq.jq_enqueue('sv', '{}')) FROM generate_series(1, 8)});
lease_and_disconnect($primary, 'postgres', 'sv', 3600);
$primary->safe_psql('postgres', q{SELECT count(jq.jq_enqueue('sv', '{}', key => 'team_a')) FROM generate_series(1, 2)});
$primary->wait_for_catchup($standby);
is( $standby->safe_psql('postgres', q{
		SELECT s.ready || ',' || s.in_flight || ',' || s.scheduled || '|' ||
		       (SELECT count(*) FILTER (WHERE state = 'r') || ',' || count(*) FILTER (WHERE state = 'l')
		          FROM jq.job j JOIN jq.queue q USING (queue_id) WHERE q.name = 'sv')
		  FROM jq.queue_stats s WHERE s.queue = 'sv'}),
	'9,1,0|9,1',
	'on the standby jq.queue_stats counts the jobs in each state from the tables');
is( $standby->safe_psql('postgres', q{
		SELECT string_agg(coalesce(key, '-') || ':' || ready || ',' || in_flight, ' '
		                  ORDER BY key NULLS FIRST)
		  FROM jq.key_stats WHERE queue = 'sv'}),
	'-:7,1 team_a:2,0', 'and jq.key_stats those of each key');
for my $sql (q{SELECT count(*) FROM jq.key_stats}, q{SELECT count(*) FROM jq.usage},
	q{SELECT count(*) FROM jq.batch_progress}, qq{SELECT state FROM jq.jq_result($id)},
	q{SELECT count(*) FROM jq.stats_history})
{
	my ($rc, $out, $err) = $standby->psql('postgres', $sql);
	is($rc, 0, "readable on the standby: $sql");
}
for my $sql (q{SELECT jq.jq_enqueue('sq', '{}')},
	q{SELECT jq.jq_enqueue_batch('sq', ARRAY['{}'::jsonb])},
	q{SELECT * FROM jq.jq_dequeue('sq')},
	q{CALL jq.jq_wait_dequeue('sq', 1, NULL, '0', NULL)},
	qq{SELECT jq.jq_ack($id, 1)},
	qq{SELECT jq.jq_ack_batch(ARRAY[$id]::bigint[], ARRAY[1]::bigint[])},
	q{SELECT * FROM jq.jq_ack_dequeue('sq')},
	qq{SELECT jq.jq_fail($id, 1, 'x')},
	qq{SELECT jq.jq_extend($id, 1)},
	qq{SELECT jq.jq_progress($id, 1, '{}')},
	qq{SELECT jq.jq_cancel($id)},
	q{SELECT jq.jq_redrive('sq')},
	q{SELECT jq.jq_create_queue('nq')},
	q{SELECT jq.jq_alter_queue('sq', max_attempts => 3)},
	q{SELECT jq.jq_drop_queue('sq', force => true)})
{
	my ($rc, $out, $err) = $standby->psql('postgres', $sql,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	like($err, qr/ERROR:  25006/, "read-only on the standby (25006): $sql");
}

# --- failover --------------------------------------------------------------------

# the primary fails with the row lock held: nothing more comes from it
$primary->stop('immediate');
$holder->quit;

my $log_offset = -s $standby->logfile;
my $promote_at = time;
$standby->promote;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	'f', 'the standby is promoted');
$standby->wait_for_log(qr/pgjq worker started for database "postgres"/, $log_offset);
pass('a pgjq worker starts after the promotion');
ok(defined wait_for_worker($standby, 'postgres'),
	'jq.jq_worker_status() on the promoted node names the worker');
my $wpid = worker_pid($standby, 'postgres');
is( $standby->safe_psql('postgres', qq{
		SELECT backend_type FROM pg_stat_activity WHERE pid = $wpid}),
	'pgjq worker', 'and it shows in pg_stat_activity');

my $reclaimed = poll_fast($standby, 'postgres',
	"SELECT state = 'ready' FROM jq.jq_result($id)", 30 - (time - $promote_at));
$reclaimed = time - $promote_at if defined $reclaimed;
ok(defined $reclaimed, 'the promoted node reclaims the expired lease');
note sprintf('reclaimed %.2f s after the promotion began', $reclaimed // -1);
cmp_ok($reclaimed // 99, '<', 5, 'within 5 s of the promotion');
is( $standby->safe_psql('postgres',
		"SELECT state, last_error, attempts FROM jq.jq_result($id)"),
	'ready|lease expired|1', 'as an expired lease, after one attempt');

# the promoted node is a working queue
my $new = $standby->safe_psql('postgres', q{SELECT jq.jq_enqueue('sq', '{"n": 2}')});
my $deq = $standby->safe_psql('postgres', q{
	CREATE TABLE taken AS SELECT job_id, lease_token FROM jq.jq_dequeue('sq', 10);
	SELECT string_agg(job_id::text, ',' ORDER BY job_id) FROM taken});
is($deq, "$id,$new", 'the promoted node hands out the reclaimed job and a new one');
is( $standby->safe_psql('postgres',
		'SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token)) FROM taken'),
	'2', 'and both are acked');
is( $standby->safe_psql('postgres', qq{
		SELECT string_agg(state || ':' || attempts, ',' ORDER BY job_id)
		  FROM (SELECT * FROM jq.jq_result($id) UNION ALL SELECT * FROM jq.jq_result($new)) r}),
	'succeeded:2,succeeded:1', 'the reclaimed job after two attempts, the new one after one');

$standby->stop;
done_testing();
