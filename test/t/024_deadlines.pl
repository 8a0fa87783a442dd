# Deadlines, usage and the background worker: a job not started by its
# deadline is expired by the worker on time even when no worker dequeues
# (the worker wakes for the next deadline), after a crash too (the
# deadlines' scan bound starts afresh with the counters), and exactly once;
# usage reports are rolled up by the worker, once each.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('deadlines', extension => 1, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.stats_interval' => '1s' });
create_queue($node, 'postgres', 'dl');
wait_for_counters($node, 'postgres', 'dl') or die 'counters never became valid';

# a deadline 2 s ahead, nobody dequeues: the worker ends it about then
my $id = $node->safe_psql('postgres', q{
    SELECT jq.jq_enqueue('dl', '{"n": 1}', deadline => clock_timestamp() + interval '2 seconds')});
my $t0 = time;
$node->poll_query_until('postgres', "SELECT state = 'expired' FROM jq.jq_result($id)")
  or die 'the job never expired';
my $took = time - $t0;
cmp_ok($took, '>=', 1.5, sprintf('not before its deadline (%.1f s)', $took));
cmp_ok($took, '<', 4, sprintf('and expired by the worker within 2 s of it (%.1f s)', $took));
is($node->safe_psql('postgres', qq{
    SELECT last_error LIKE 'not started by its deadline %' FROM jq.jq_result($id)}), 't',
   'with the reason');

# a crash with a job waiting for its deadline: expired after the restart
$id = $node->safe_psql('postgres', q{
    SELECT jq.jq_enqueue('dl', '{"n": 2}', deadline => clock_timestamp() + interval '3 seconds')});
$node->stop('immediate');
$node->start;
$node->poll_query_until('postgres', "SELECT state = 'expired' FROM jq.jq_result($id)")
  or die 'the job never expired after the crash';
pass('after a crash, the worker expires a job past its deadline');

# many jobs at one deadline, expired once each, counted once
$node->safe_psql('postgres', q{
    SELECT jq.jq_enqueue_batch('dl', array_fill('{}'::jsonb, ARRAY[2500]),
                               deadlines => array_fill(clock_timestamp() + interval '1 second',
                                                       ARRAY[2500]))});
$node->poll_query_until('postgres', q{
    SELECT count(*) = 0 FROM jq.job WHERE queue_id = jq.queue_id('dl')})
  or die 'the batch never expired';
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM jq.job_result WHERE queue_id = jq.queue_id('dl') AND state = 'e'}),
   '2502', 'every job expired, once');
is($node->safe_psql('postgres', q{SELECT expired_total FROM jq.queue_stats WHERE queue = 'dl'}),
   '2502', 'and counted once (the counters, rebuilt from the tables at the crash)');

# usage reports: rolled up by the worker into jq.usage_daily, once each
$node->safe_psql('postgres', q{
    SELECT count(jq.jq_enqueue('dl', '{}', key => 'k' || (g % 3), cost => 10))
      FROM generate_series(1, 300) g;
    SELECT count(jq.jq_ack(job_id, lease_token, NULL,
                           jsonb_build_object('cost', 7, 'input_tokens', 5)))
      FROM jq.jq_dequeue('dl', 300)});
$node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM jq.usage_pending')
  or die 'the worker never rolled up the usage';
is($node->safe_psql('postgres', q{
    SELECT string_agg(key || ' ' || jobs || ' ' || cost || ' ' || (usage->>'input_tokens'), ', '
                      ORDER BY key)
      FROM jq.usage_daily WHERE queue_id = jq.queue_id('dl')}),
   'k0 100 700 500, k1 100 700 500, k2 100 700 500',
   'the worker rolled up every report once, per key');

$node->stop;
done_testing();
