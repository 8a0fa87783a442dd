# Ordered keys under concurrent load (src/keys.c, lease.c): producers
# enqueue jobs of 24 ordered keys (each key has one producer, so its enqueue
# order is clear) while workers lease them and, in a later transaction, ack
# most, fail some for a retry at once, fail some with a backoff, and drop
# some, whose leases of one second the background worker reclaims.  Every
# delivery is logged in the dequeue's own transaction.  Afterwards: each
# key's deliveries follow its enqueue order, a retry came back before the
# key's next job, no key ever had two jobs in flight, and the queue drains
# with every job done once.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('ordered', extension => 1, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.naptime' => '100ms' });
create_queue($node, 'postgres', 'os', key_ordered => 'true', fair => 'true',
             lease_seconds => 1, max_attempts => 1000,
             backoff_base => '10 milliseconds', backoff_cap => '100 milliseconds');
$node->safe_psql('postgres', q{
    CREATE TABLE dlog (seq bigserial PRIMARY KEY, job_id bigint, key text, attempt int,
                       enqueued_at timestamptz, at timestamptz DEFAULT clock_timestamp());
    CREATE TABLE samples (max_per_key bigint);
});
wait_for_counters($node, 'postgres', 'os') or die 'counters never became valid';

my %script = (
    # client c of 3 owns keys k<c>_1 .. k<c>_8
    produce => q{
\set k random(1, 8)
\set n random(1, 4)
SELECT jq.jq_enqueue_batch('os', array_fill('{}'::jsonb, ARRAY[:n]),
    keys => array_fill('k' || :client_id || '_' || :k, ARRAY[:n]));
},
    work => q{
WITH d AS (SELECT * FROM jq.jq_dequeue('os', 3)),
     l AS (INSERT INTO dlog (job_id, key, attempt, enqueued_at)
           SELECT job_id, key, attempt, enqueued_at FROM d RETURNING job_id)
SELECT coalesce(quote_literal(array_agg(d.job_id)::text), '''{}''') AS ids,
       coalesce(quote_literal(array_agg(d.lease_token)::text), '''{}''') AS toks
  FROM d \gset
\sleep 1 ms
SELECT count(CASE WHEN x.r < 0.7 THEN jq.jq_ack(x.id, x.tok)::text
                  WHEN x.r < 0.82 THEN jq.jq_fail(x.id, x.tok, 'retry now', retry_in => '0')
                  WHEN x.r < 0.94 THEN jq.jq_fail(x.id, x.tok, 'back off')
             END)
  FROM (SELECT unnest(:ids::bigint[]) AS id, unnest(:toks::bigint[]) AS tok,
               random() AS r) x;
},
    sample => q{
INSERT INTO samples
SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM jq.job
                                  WHERE state = 'l' GROUP BY key) l;
});

# 8 seconds of load: 3 producers (150 batches a second in all), 6 workers,
# a sampler
pgbench_load($node, 'postgres', 8, \%script,
	[['produce', 3, 150], ['work', 6, 0], ['sample', 1, 50]]);

# drain: lease (logged) and ack until nothing is left; the leases dropped
# come back when the worker reclaims them
my $left;
my $t0 = time;
while (time - $t0 < 90)
{
	$left = $node->safe_psql('postgres', q{
		WITH d AS (SELECT * FROM jq.jq_dequeue('os', 100)),
		     l AS (INSERT INTO dlog (job_id, key, attempt, enqueued_at)
		           SELECT job_id, key, attempt, enqueued_at FROM d)
		SELECT count(*) FROM d;
		SELECT count(*) FILTER (WHERE jq.jq_ack(id, lease_token)) FROM jq.job
		 WHERE state = 'l' AND lease_expires_at > clock_timestamp() + interval '500 ms';
		SELECT count(*) FROM jq.job});
	$left = (split /\n/, $left)[-1];
	last if $left eq '0';
	select(undef, undef, undef, 0.05);
}
is($left, '0', 'the queue drains completely: no key stuck');

my ($enqueued, $results, $distinct, $retried) = split /\|/, $node->safe_psql('postgres', q{
	SELECT (SELECT sum(enqueued_total) FROM jq.queue_stats WHERE queue = 'os'),
	       count(*), count(DISTINCT job_id), count(*) FILTER (WHERE attempts > 1)
	  FROM jq.job_result});
cmp_ok($enqueued, '>', 1000, "a real load: $enqueued jobs");
is($results, $enqueued, 'every job enqueued has a result');
is($distinct, $results, 'none twice');
cmp_ok($retried, '>', 100, "$retried jobs were retried or reclaimed");
is($node->safe_psql('postgres', 'SELECT count(*) FROM dlog'),
   $node->safe_psql('postgres', 'SELECT sum(attempts) FROM jq.job_result'),
   'every delivery was logged');

# each key's deliveries, in the order they happened: the job's place in
# its key's order, (enqueued_at, id), never goes back; a job delivered
# again follows its own previous delivery directly
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (
	    SELECT key, job_id, attempt, enqueued_at,
	           lag(job_id) OVER w AS prev_job, lag(attempt) OVER w AS prev_attempt,
	           lag(enqueued_at) OVER w AS prev_at
	      FROM dlog WINDOW w AS (PARTITION BY key ORDER BY seq)) d
	 WHERE (enqueued_at, job_id) < (prev_at, prev_job)
	    OR (attempt > 1 AND (job_id, attempt - 1) IS DISTINCT FROM (prev_job, prev_attempt))
	    OR (attempt = 1 AND job_id = prev_job)}),
   '0', "each key's jobs were delivered in enqueue order, retries in their place");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT key, count(DISTINCT job_id) AS jobs FROM dlog GROUP BY key) k
	 WHERE jobs < 10}),
   '0', 'every key had a backlog of its own');
my $max_key = $node->safe_psql('postgres', 'SELECT max(max_per_key) FROM samples');
is($max_key, '1', 'never two jobs of a key in flight');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM jq.key_stats WHERE queue = 'os' AND (ready, scheduled, in_flight) <> (0, 0, 0)}),
   '0', 'the keys\' counts are back to zero');

$node->stop;
done_testing();
