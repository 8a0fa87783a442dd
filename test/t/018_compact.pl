# Space back after a held snapshot (jq.compact, src/compact.c).  A session
# holds a REPEATABLE READ snapshot while jobs churn through a queue, so
# vacuum can remove nothing and pgjq's tables and indexes grow; after the
# snapshot ends and vacuum has run, the pgjq worker (pgjq.compact, every
# pgjq.stats_interval) must bring every one of them back to the size it had
# before the hold, without VACUUM FULL or REINDEX from anyone else: it
# rebuilds the indexes that vacuum found half empty and moves the results
# off the tail of jq.job_result so that vacuum truncates it.  While the
# snapshot is held it must do nothing (a rebuild would keep every dead
# entry).  Moving results must not change them: every result is still
# there, with the same values, and the counters are exact.
#
# Autovacuum is off: the test runs VACUUM itself, as autovacuum would,
# so that it knows when vacuum has run.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('compact', extension => 1,
	conf => {
		'pgjq.naptime' => '100ms',
		'pgjq.stats_interval' => '1s',
		'autovacuum' => 'off',
		'pgjq.compact' => 'off',    # on once the hold's churn is done
	});
my $db = 'postgres';
create_queue($node, $db, 'cq', result_retention => '1 hour');
ok(wait_for_worker($node, $db), 'the worker runs');

# churn(N): N jobs through the queue, enqueued and acked in batches of 5,000
sub churn
{
	my ($jobs) = @_;
	$node->safe_psql($db, churn_sql('cq', $jobs / 5000, 5000, 0));
}

# sizes: name => bytes of every table and index of jq.job and jq.job_result
my $sizes_sql = q{
SELECT c.relname, pg_relation_size(c.oid)
  FROM pg_class c
 WHERE c.oid IN ('jq.job'::regclass, 'jq.job_result'::regclass)
    OR c.oid IN (SELECT indexrelid FROM pg_index
                  WHERE indrelid IN ('jq.job'::regclass, 'jq.job_result'::regclass))
 ORDER BY 1};
sub sizes
{
	return { map { split /\|/ } split /\n/, $node->safe_psql($db, $sizes_sql) };
}

# 100,000 results kept, then the sizes that normal work needs
churn(100_000);
$node->safe_psql($db, 'VACUUM jq.job, jq.job_result');
my $before = sizes();
# These sizes are the baselines the hold is measured against.  Compaction
# stays off until the hold's churn is done: the worker's rebuilds would
# otherwise leave baselines that depend on its timing (a rebuild in the
# middle of the churn, of an index still holding the room of the deleted
# pages of the churn before, raises the baseline to the size it had then).
$node->safe_psql($db, q{
INSERT INTO jq.compaction (relation, baseline_bytes)
SELECT 'jq.' || c.relname, pg_relation_size(c.oid)
  FROM pg_class c
 WHERE c.oid IN ('jq.job'::regclass, 'jq.job_result'::regclass)
    OR c.oid IN (SELECT indexrelid FROM pg_index
                  WHERE indrelid IN ('jq.job'::regclass, 'jq.job_result'::regclass))});
my $results = $node->safe_psql($db,
	q{SELECT md5(string_agg(r::text, ',' ORDER BY job_id)) FROM jq.job_result r});

# the hold: 300,000 more jobs, whose results then expire (deleted here as
# the purge deletes them), but for one in 100, kept all over the table's
# new tail: vacuum cannot truncate it until they are moved
my $last_kept = $node->safe_psql($db, 'SELECT max(job_id) FROM jq.job_result');
my $holder = $node->background_psql($db);
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$holder->query_safe('SELECT count(*) FROM jq.queue');
churn(300_000);
alter_system($node, 'pgjq.compact', 'on');
$node->safe_psql($db, "DELETE FROM jq.job_result WHERE job_id > $last_kept AND job_id % 100 <> 0");
$node->safe_psql($db, 'VACUUM jq.job, jq.job_result');
$node->safe_psql($db, 'VACUUM jq.job, jq.job_result');
my $held = sizes();
ok($held->{job_pkey} > 2 * $before->{job_pkey} && $held->{job_result} > 2 * $before->{job_result},
	"the held snapshot grew the tables and indexes (job_pkey $before->{job_pkey} -> $held->{job_pkey}, "
	  . "job_result $before->{job_result} -> $held->{job_result})");
sleep 3;    # three passes of the worker
is_deeply(sizes(), $held, 'while the snapshot is held, compaction changes nothing');
is($node->safe_psql($db, 'SELECT jq.compact()'), '0', 'jq.compact() finds nothing to do');

$holder->query_safe('COMMIT');
$holder->quit;

# vacuum now removes the dead rows and entries; the worker compacts; vacuum
# truncates what the moves emptied; until every size is back (or time is up)
my $back = 0;
my $t0 = time;
my $now;
while (time - $t0 < 120)
{
	$node->safe_psql($db, 'VACUUM jq.job, jq.job_result');
	$now = sizes();
	$back = !grep { $now->{$_} > $before->{$_} * ($_ =~ /^job_result/ ? 1.15 : 1) } keys %$before;
	last if $back;
	sleep 1;
}
ok($back, 'every table and index is back to its size before the hold, or smaller '
	  . '(jq.job_result and its indexes within 15%: they hold 3% more results, and the moves '
	  . 'leave room for a tenth more): '
	  . join(', ', map { "$_ $before->{$_} -> $held->{$_} -> $now->{$_}" } sort keys %$before));
like(slurp_file($node->logfile), qr/pgjq: rebuilt index jq\.job_pkey to give its space back/,
	'the worker rebuilt jq.job_pkey');
like(slurp_file($node->logfile), qr/pgjq: moved \d+ rows of jq\.job_result off its tail/,
	'the worker moved results off the tail of jq.job_result');

is($node->safe_psql($db,
		qq{SELECT md5(string_agg(r::text, ',' ORDER BY job_id)) FROM jq.job_result r
		    WHERE job_id <= $last_kept}),
	$results, 'the results kept are all there, unchanged by the moves');
is($node->safe_psql($db, "SELECT count(*) FROM jq.job_result WHERE job_id > $last_kept"),
	'3000', 'and so are the later ones');
is($node->safe_psql($db, q{SELECT succeeded_total FROM jq.queue_stats WHERE queue = 'cq'}),
	'400000', 'moved results were not counted again');
is(counters_mismatch($node, $db), '0', 'the counters match the tables');

# the queue still works end to end
enqueue_jobs($node, $db, 'cq', '{"after": true}');
is($node->safe_psql($db, q{
	SELECT jq.jq_ack(job_id, lease_token, '{"ok": 1}') FROM jq.jq_dequeue('cq')}),
	't', 'a job goes through after compaction');

$node->stop;
done_testing();
