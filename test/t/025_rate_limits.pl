# Rate limits under load, measured (src/keys.c): 4 workers pull jobs of
# random cost from a queue whose budget is 500 cost units a second, more
# than it allows, for 10 seconds; each delivery is logged with its cost in
# the dequeue's own transaction.  Over the run and over every 1-second
# window the cost handed out stays within budget x T / period plus one
# period's budget (tolerance: one job's cost), and the budget is used (at
# least 90% of it).  Then a
# kill -9 after a burst: the buckets start over from empty at the recount,
# so no second budget is granted within the period.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('rate', extension => 1, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.naptime' => '100ms' });
create_queue($node, 'postgres', 'rt', rate_cost => 500, rate_period => '1 second');
$node->safe_psql('postgres', q{
    CREATE TABLE dlog (at timestamptz DEFAULT clock_timestamp(), job_id bigint, cost numeric);
    SELECT count(jq.jq_enqueue('rt', '{}', cost => 10 + (g % 5) * 10))
      FROM generate_series(1, 20000) g});
wait_for_counters($node, 'postgres', 'rt') or die 'counters never became valid';
sleep 1.2;    # a bucket fills from the start of the counts

pgbench_load($node, 'postgres', 10, {
    work => q{
WITH d AS (SELECT * FROM jq.jq_dequeue('rt', 5)),
     l AS (INSERT INTO dlog (job_id, cost) SELECT d.job_id, j.cost
             FROM d JOIN jq.job j ON j.id = d.job_id RETURNING job_id)
SELECT coalesce(quote_literal(array_agg(job_id)::text), '''{}''') AS ids,
       coalesce(quote_literal(array_agg(lease_token)::text), '''{}''') AS toks
  FROM d \gset
SELECT count(*) FROM jq.jq_ack_batch(:ids::bigint[], :toks::bigint[]);
} }, [['work', 4, 0]]);

my ($total, $secs, $max_window, $jobs) = split /\|/, $node->safe_psql('postgres', q{
    SELECT sum(cost), extract(epoch FROM max(at) - min(at)),
           (SELECT max(w) FROM (SELECT sum(d2.cost) AS w FROM dlog d1
                                  JOIN dlog d2 ON d2.at >= d1.at AND d2.at < d1.at + interval '1 second'
                                 GROUP BY d1.job_id) x),
           count(*)
      FROM dlog});
diag(sprintf('%d jobs, cost %d over %.1f s; the busiest second %d', $jobs, $total, $secs, $max_window));
# tolerance: one job's cost (50), for the time between a job's lease and
# its log row
cmp_ok($total, '<=', 500 * $secs + 500 + 50,
       'the cost handed out stays within budget x T / period + one budget');
cmp_ok($max_window, '<=', 1000 + 50, 'and within every 1-second window (budget + one budget)');
cmp_ok($total, '>=', 0.9 * 500 * $secs, 'the budget was used (demand exceeded it)');

# a burst empties the bucket; a kill -9 forgets shared memory; after the
# recount the bucket fills from empty, not from full
$node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('rt', 1000)});
$node->stop('immediate');
$node->start;
wait_for_counters($node, 'postgres', 'rt') or die 'counters never rebuilt after the crash';
my ($got, $since) = split /\|/, $node->safe_psql('postgres', q{
    SELECT (SELECT coalesce(sum(j.cost), 0) FROM jq.jq_dequeue('rt', 1000) d
              JOIN jq.job j ON j.id = d.job_id),
           extract(epoch FROM clock_timestamp() - (SELECT max(since) FROM jq.counters()))});
cmp_ok($got, '<=', 500 * $since + 50,
       sprintf('after the crash, no burst: cost %d handed out %.2f s after the recount', $got, $since));

# a worker waiting on LISTEN is woken when a throttled queue's budget is
# back, by the background worker, once
create_queue($node, 'postgres', 'rw', rate_requests => 1, rate_period => '2 seconds');
$node->safe_psql('postgres', q{SELECT count(jq.jq_enqueue('rw', '{}')) FROM generate_series(1, 3)});
sleep 2.1;
is($node->safe_psql('postgres', q{
    SELECT count(*) FROM jq.jq_dequeue('rw', 10);
    SELECT count(*) FROM jq.jq_dequeue('rw', 10)}), "1\n0", 'one job a period, then throttled');
my ($lout, $lerr) = ('', '');
my $t0 = time;
my $l = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', 'LISTEN jq_rw',
	  '-c', 'SELECT pg_sleep(3.5)' ],
	'>', \$lout, '2>', \$lerr);
$l->finish;
like($lout, qr/Asynchronous notification "jq_rw"/, 'the waiting worker was woken when the budget came back');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('rw', 10)}), '1',
   'and the next job goes');

$node->stop;
done_testing();
