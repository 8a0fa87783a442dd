# Flow control under concurrent load (src/keys.c): producers enqueue jobs
# of 40 keys (some urgent, some scheduled a moment ahead) while workers
# lease them in batches and ack them in later transactions, on a queue with
# fair share, a queue-wide and a per-key concurrency limit.  A sampler
# watches the leases; afterwards the queue must drain completely: no job
# stranded behind a key's head, none lost, none done twice, no limit ever
# exceeded, and the keys' counts equal the tables.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(usleep);
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('stress', extension => 1, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.naptime' => '100ms' });
create_queue($node, 'postgres', 'st', max_in_flight => 12, key_max_in_flight => 2,
             fair => 'true', lease_seconds => 60);
$node->safe_psql('postgres', q{
    SELECT 1 FROM jq.jq_set_key_policy('st', 'k1', weight => 5, max_in_flight => 4);
    CREATE TABLE samples (leased bigint, max_per_key bigint);
});
wait_for_counters($node, 'postgres', 'st') or die 'counters never became valid';

my %script = (
    produce => q{
\set k random(1, 40)
\set n random(1, 5)
SELECT jq.jq_enqueue_batch('st', array_fill('{}'::jsonb, ARRAY[:n]),
    priority => CASE WHEN random() < 0.1 THEN 10 ELSE 0 END,
    run_at => CASE WHEN random() < 0.1 THEN clock_timestamp() + interval '200 milliseconds' END,
    keys => array_fill('k' || :k, ARRAY[:n]));
},
    work => q{
SELECT coalesce(quote_literal(array_agg(job_id)::text), '''{}''') AS ids,
       coalesce(quote_literal(array_agg(lease_token)::text), '''{}''') AS toks
  FROM jq.jq_dequeue('st', 5) \gset
\sleep 2 ms
SELECT count(*) FROM jq.jq_ack_batch(:ids::bigint[], :toks::bigint[]);
},
    sample => q{
INSERT INTO samples
SELECT (SELECT count(*) FROM jq.job WHERE state = 'l'),
       (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM jq.job
                                          WHERE state = 'l' AND key <> 'k1' GROUP BY key) l);
});

# 6 seconds of load: 3 producers (300 batches a second in all), 6
# workers (up to 5 jobs each, held 2 ms: more than the queue's 12 slots),
# a sampler
pgbench_load($node, 'postgres', 6, \%script,
	[['produce', 3, 300], ['work', 6, 0], ['sample', 1, 50]]);

# drain: lease and ack until nothing is left (due jobs are promoted), at
# most 12 at a time (the queue's limit)
my $left;
my $t0 = time;
while (time - $t0 < 60)
{
	$left = $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token, NULL))
		  FROM jq.jq_dequeue('st', 100);
		SELECT count(*) FROM jq.job});
	$left = (split /\n/, $left)[-1];
	last if $left eq '0';
}
is($left, '0', 'the queue drains completely: no job stranded');
my ($enqueued, $results, $distinct, $retried) = split /\|/, $node->safe_psql('postgres', q{
	SELECT (SELECT sum(enqueued_total) FROM jq.queue_stats WHERE queue = 'st'),
	       count(*), count(DISTINCT job_id), count(*) FILTER (WHERE attempts <> 1)
	  FROM jq.job_result});
cmp_ok($enqueued, '>', 1000, "a real load: $enqueued jobs");
is($results, $enqueued, 'every job enqueued has a result');
is($distinct, $results, 'none twice');
is($retried, '0', 'each done in one attempt (no lease lost)');
my ($max_leased, $max_key) = split /\|/, $node->safe_psql('postgres',
	'SELECT max(leased), max(max_per_key) FROM samples');
cmp_ok($max_leased, '<=', 12, "the queue's limit held (at most $max_leased in flight)");
cmp_ok($max_key, '<=', 2, "each key's limit held (at most $max_key of one key)");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM jq.key_stats WHERE queue = 'st' AND (ready, scheduled, in_flight) <> (0, 0, 0)}),
   '0', 'the keys\' counts are back to zero');
is($node->safe_psql('postgres', q{
	SELECT sum(succeeded_total) FROM jq.key_stats WHERE queue = 'st'}),
   $enqueued, 'and their totals add up');

$node->stop;
done_testing();
