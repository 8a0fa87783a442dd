# The O(1) depth counters equal the truth counted from the tables after a
# mixed workload, after a clean restart and after an immediate-mode crash
# (shared memory starts empty; the worker rebuilds the counters), and keep
# up with deltas afterwards.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('counters', extension => 1, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.naptime' => '200ms',
    'pgjq.stats_interval' => '1s',
    'max_prepared_transactions' => 5 });
create_queue($node, 'postgres', 'c', max_attempts => 2, backoff_base => '1 hour',
             backoff_cap => '1 hour');

# the worker builds the counters once it runs
wait_for_counters($node, 'postgres', 'c')
  or die 'counters never became valid';

sub workload
{
    $node->safe_psql('postgres', q{
        SELECT jq.jq_enqueue_batch('c', (SELECT array_agg(jsonb_build_object('n', g))
                                        FROM generate_series(1, 200) g), priority => 5);
        SELECT jq.jq_enqueue_batch('c', (SELECT array_agg(jsonb_build_object('n', g))
                                        FROM generate_series(1, 300) g));
        BEGIN; SELECT jq.jq_enqueue('c', '{}'); ROLLBACK;
        CREATE TEMP TABLE l AS SELECT * FROM jq.jq_dequeue('c', 100);
        SELECT count(*) FROM jq.jq_ack_batch(
            ARRAY(SELECT job_id FROM l ORDER BY job_id LIMIT 40),
            ARRAY(SELECT lease_token FROM l ORDER BY job_id LIMIT 40));
        SELECT jq.jq_fail(job_id, lease_token, 'x') FROM l
         WHERE job_id IN (SELECT job_id FROM l ORDER BY job_id OFFSET 40 LIMIT 20);
        SELECT jq.jq_fail(job_id, lease_token, 'x', permanent => true) FROM l
         WHERE job_id IN (SELECT job_id FROM l ORDER BY job_id OFFSET 60 LIMIT 10);
        SELECT jq.jq_cancel(job_id) FROM l
         WHERE job_id IN (SELECT job_id FROM l ORDER BY job_id OFFSET 70 LIMIT 5);
        SELECT jq.jq_redrive('c', ARRAY(SELECT job_id FROM jq.dead_letter LIMIT 3));
        BEGIN; SELECT jq.jq_redrive('c'); ROLLBACK;
    });
}

workload();
is(counters_mismatch($node, 'postgres'), '0',
   'counters equal the truth after a mixed workload');

# a prepared transaction's deltas reach the counters through a rebuild
$node->safe_psql('postgres', q{
    BEGIN; SELECT jq.jq_enqueue('c', '{"prepared": true}'); PREPARE TRANSACTION 'p1';
});
$node->safe_psql('postgres', q{COMMIT PREPARED 'p1'});
counters_mismatch($node, 'postgres', wait => 1) eq '0'
  or die 'counters did not catch up with a prepared transaction';
pass('counters catch up after COMMIT PREPARED');

$node->restart;
wait_for_counters($node, 'postgres', 'c', 'ready > 0')
  or die 'counters never rebuilt after restart';
is(counters_mismatch($node, 'postgres'), '0',
   'counters equal the truth after a clean restart');

workload();
$node->stop('immediate');
$node->start;
wait_for_counters($node, 'postgres', 'c', 'ready > 0')
  or die 'counters never rebuilt after a crash';
is(counters_mismatch($node, 'postgres'), '0',
   'counters equal the truth after an immediate-mode crash');

workload();
is(counters_mismatch($node, 'postgres'), '0',
   'and keep up with the deltas after the rebuild');

# the view reads no table in full: its cost does not grow with depth
my $plan = $node->safe_psql('postgres',
    'EXPLAIN (COSTS OFF) SELECT * FROM jq.queue_stats');
unlike($plan, qr/Seq Scan on job\b/, 'jq.queue_stats never scans the job table');

# alerts fire and clear by themselves: the worker checks every stats_interval
my $log_offset = -s $node->logfile;
create_queue($node, 'postgres', 'alerted', alert_depth_warning => 3);
enqueue_jobs($node, 'postgres', 'alerted', ('{}') x 4);
$node->poll_query_until('postgres',
    q{SELECT count(*) = 1 FROM jq.alert WHERE queue = 'alerted' AND cleared_at IS NULL})
  or die 'the depth alert never fired';
pass('the worker raises the depth alert');
ok($node->wait_for_log(qr/WARNING:  pgjq: queue "alerted" depth warning alert/, $log_offset),
   'and logs a WARNING');
$node->safe_psql('postgres', q{
    SELECT jq.jq_ack(job_id, lease_token) FROM jq.jq_dequeue('alerted', 10);
});
$node->poll_query_until('postgres',
    q{SELECT cleared_at IS NOT NULL FROM jq.alert WHERE queue = 'alerted'})
  or die 'the depth alert never cleared';
pass('and clears it once the queue drains');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.stats_history WHERE queue = 'alerted'}) > 0,
   1, 'depth samples are written to jq.stats_history');

$node->stop;
done_testing();
