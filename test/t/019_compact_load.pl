# Copyright (c) 2026, the pgjq developers
#
# Compaction under load: a jq.job_result that a burst bloated comes back to
# its working size while acks keep coming in.  Moving rows would take the
# room the acks need, so under load the worker only closes the table's tail
# to inserts (marked full in the free space map after each vacuum): the
# acks fill the room before it, the tail's results reach their retention
# and are purged, and vacuum truncates it.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('compact_load', extension => 1,
	conf => {
		'pgjq.naptime' => '100ms',
		'pgjq.stats_interval' => '1s',
		'autovacuum' => 'off',    # the test vacuums, every second
	});
my $db = 'postgres';
create_queue($node, $db, 'lq', result_retention => '2 seconds');
ok(wait_for_worker($node, $db), 'the worker runs');

# The steady load: 100 jobs enqueued, leased and acked about every 0.05 s
# (well over the 100 acks a second under which moves would be allowed),
# until the table stop_load has a row.
$node->safe_psql($db, 'CREATE TABLE stop_load (stop bool)');
my $loader = $node->background_psql($db);
$loader->query_until(qr/loading/,
	"\\echo loading\n" . churn_sql('lq', undef, 100, 0.05, 'EXISTS (SELECT FROM stop_load)') . "\n");

# The burst: 400,000 jobs through the same queue, their results purged two
# seconds later, leaving the table mostly free space.
$node->safe_psql($db, churn_sql('lq', 80, 5000, 0));
my $log_offset = -s $node->logfile;
my $bloated = $node->safe_psql($db, q{SELECT pg_relation_size('jq.job_result')});
ok($node->poll_query_until($db, 'SELECT count(*) < 20000 FROM jq.job_result'),
	'the burst\'s results are purged');

my $succeeded_sql = q{SELECT succeeded_total FROM jq.queue_stats WHERE queue = 'lq'};
my $succeeded_before = $node->safe_psql($db, $succeeded_sql);
my $now = $bloated;
my $t0 = time;
while (time - $t0 < 90)
{
	$node->safe_psql($db, 'VACUUM jq.job, jq.job_result');
	$now = $node->safe_psql($db, q{SELECT pg_relation_size('jq.job_result')});
	last if $now < $bloated / 4;
	sleep 1;
}
my $log = slurp_file($node->logfile, $log_offset);
ok($now < $bloated / 4,
	"under load, jq.job_result comes back from $bloated bytes to less than a quarter ($now)");
like($log,
	qr/pgjq: closed the last \d+ of the \d+ pages of jq\.job_result to inserts.*\n.*DETAIL:  Acks are coming in/,
	'the worker closed its tail to inserts, acks coming in');
unlike($log, qr/pgjq: moved \d+ rows/, 'and moved no rows');
my $acked = $node->safe_psql($db, $succeeded_sql) - $succeeded_before;
cmp_ok($acked, '>', 1000, "the load went on meanwhile ($acked jobs acked)");

$node->safe_psql($db, 'INSERT INTO stop_load VALUES (true)');
$loader->quit;
my ($enqueued, $succeeded) = split /\|/, $node->safe_psql($db,
	q{SELECT enqueued_total, succeeded_total FROM jq.queue_stats WHERE queue = 'lq'});
is($succeeded, $enqueued, "every job enqueued succeeded ($enqueued)");
is(counters_mismatch($node, $db), '0', 'the counters match the tables');

$node->stop;
done_testing();
