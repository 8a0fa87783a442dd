# Eight concurrent workers (pgbench clients) drain a queue of 5,000 jobs
# of mixed priorities.  Every delivery is logged, in the worker's own
# transaction, to a table, so that afterwards we can prove:
#   - each job was delivered exactly once (no lease expires during the run,
#     so a second delivery would mean two workers held the job at once);
#   - each job succeeded exactly once, acked by the worker that leased it,
#     and nothing is left in the hot table;
#   - urgent jobs went out before standard ones, as far as priority order
#     can hold with eight workers dequeuing at once.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $njobs = 5000;
my $clients = 8;
my $max_batch = 5;     # the most jobs one dequeue takes
my $transactions = 400;    # per client: 3,200 in all, enough to drain

my $node = new_node('workers', extension => 1);
create_queue($node, 'postgres', 'work');

# Priorities are interleaved by id, so that handing out jobs in id (or
# enqueue) order would show: 500 urgent (10), 1,000 high (5), 3,500
# standard (0).
$node->safe_psql('postgres', qq{
    SELECT count(jq.jq_enqueue('work', jsonb_build_object('n', g),
                            priority => CASE WHEN g % 10 = 0 THEN 10
                                             WHEN g % 10 IN (3, 7) THEN 5
                                             ELSE 0 END))
      FROM generate_series(1, $njobs) g;
    -- one row per delivery, written in the delivering transaction
    CREATE TABLE deliveries (
        job_id      bigint NOT NULL,
        lease_token bigint NOT NULL,
        priority    integer NOT NULL,
        client      integer NOT NULL,
        tx          bigint NOT NULL DEFAULT txid_current());
    CREATE INDEX ON deliveries (tx);
    -- one row per ack, with its outcome
    CREATE TABLE acks (job_id bigint NOT NULL, acked boolean NOT NULL, client integer NOT NULL);
});

is( $node->safe_psql('postgres',
        q{SELECT string_agg(priority || ':' || n, ',' ORDER BY priority DESC)
            FROM (SELECT priority, count(*) AS n FROM jq.job WHERE state = 'r' GROUP BY priority) p}),
    '10:500,5:1000,0:3500',
    'queue filled: 500 urgent, 1000 high, 3500 standard jobs ready');

# the deliveries of the current transaction
my $mine = 'FROM deliveries WHERE tx = txid_current() ORDER BY job_id';

my %scripts = (
    # dequeue up to five jobs, log them, ack them together
    '002_batch@3' => qq{
BEGIN;
INSERT INTO deliveries (job_id, lease_token, priority, client)
    SELECT job_id, lease_token, priority, :client_id FROM jq.jq_dequeue('work', $max_batch);
INSERT INTO acks (job_id, acked, client)
    SELECT b.job_id, b.acked, :client_id
      FROM jq.jq_ack_batch(ARRAY(SELECT job_id $mine),
                        ARRAY(SELECT lease_token $mine),
                        ARRAY(SELECT jsonb_build_object('client', :client_id) $mine)) b;
COMMIT;
},
    # dequeue one job, log it, ack it
    '002_single@1' => qq{
BEGIN;
INSERT INTO deliveries (job_id, lease_token, priority, client)
    SELECT job_id, lease_token, priority, :client_id FROM jq.jq_dequeue('work', 1);
INSERT INTO acks (job_id, acked, client)
    SELECT job_id, jq.jq_ack(job_id, lease_token, jsonb_build_object('client', :client_id)), :client_id
      $mine;
COMMIT;
});

my $total_tx = $clients * $transactions;
$node->pgbench(
    "--no-vacuum --client=$clients --jobs=$clients --transactions=$transactions",
    0,
    [qr{processed: $total_tx/$total_tx}],
    [qr{^$}],
    "$clients workers run $total_tx transactions without an error",
    \%scripts);

# drained: nothing left in the hot table, every job has one result
is($node->safe_psql('postgres', 'SELECT count(*) FROM jq.job'),
    '0', 'the queue is drained: no job left in jq.job');
is( $node->safe_psql('postgres',
        'SELECT count(*) || \',\' || count(DISTINCT job_id) FROM jq.job_result'),
    "$njobs,$njobs",
    "$njobs results, one per job");

# exactly-once delivery: one delivery per job, each with its own token;
# attempts counts deliveries, so it must be 1 everywhere
is( $node->safe_psql('postgres',
        'SELECT count(*) || \',\' || count(DISTINCT job_id) || \',\' || count(DISTINCT lease_token) FROM deliveries'),
    "$njobs,$njobs,$njobs",
    'every job delivered exactly once, each delivery with a distinct token');
is($node->safe_psql('postgres', 'SELECT count(*) FROM jq.job_result WHERE attempts <> 1'),
    '0', 'every result records exactly one attempt');

# exactly-once completion: every ack succeeded, once per job
is( $node->safe_psql('postgres',
        'SELECT count(*) || \',\' || count(*) FILTER (WHERE acked) || \',\' || count(DISTINCT job_id) FROM acks'),
    "$njobs,$njobs,$njobs",
    'every delivered job acked once, and every ack returned true');

# the deliveries, the acks and the results are the same jobs, and each
# result came from the worker that leased the job, with its priority
is( $node->safe_psql('postgres', q{
        SELECT count(*) FROM deliveries d
          FULL JOIN jq.job_result r USING (job_id)
          FULL JOIN acks a USING (job_id)
         WHERE d.job_id IS NULL OR r.job_id IS NULL OR a.job_id IS NULL
            OR (r.result->>'client')::integer <> d.client
            OR a.client <> d.client
            OR r.priority <> d.priority}),
    '0',
    'deliveries, acks and results match job for job, and worker for worker');

# the work was shared: more than one worker got jobs
my $per_client = $node->safe_psql('postgres',
    'SELECT string_agg(n::text, \',\' ORDER BY client) FROM (SELECT client, count(*) AS n FROM deliveries GROUP BY client) c');
note "jobs per worker: $per_client";
cmp_ok(scalar(split(/,/, $per_client)), '>', 1, 'more than one worker took jobs');

# Priority order.  A dequeue takes the most urgent ready jobs that no
# other dequeue has locked, so when a worker takes a standard job, every
# more urgent job has already been started, except those that the other
# workers' dequeues have locked but not yet stamped: at most
# (clients - 1) * max_batch of them.  Hence, counting started_at, which
# jq_dequeue sets from the clock:
my $slack = $clients * $max_batch;
my $late_urgent = $node->safe_psql('postgres', q{
    SELECT count(*) FROM jq.job_result
     WHERE priority = 10
       AND started_at > (SELECT min(started_at) FROM jq.job_result WHERE priority = 5)});
note "urgent jobs started after the first high-priority job: $late_urgent";
cmp_ok($late_urgent, '<=', $slack,
    "at most $slack urgent jobs started after the first high-priority job");
my $late_high = $node->safe_psql('postgres', q{
    SELECT count(*) FROM jq.job_result
     WHERE priority > 0
       AND started_at > (SELECT min(started_at) FROM jq.job_result WHERE priority = 0)});
note "urgent or high jobs started after the first standard job: $late_high";
cmp_ok($late_high, '<=', $slack,
    "at most $slack urgent or high jobs started after the first standard job");
# and the plain statement of it, with a wide margin: every urgent job was
# started before the median standard job
is( $node->safe_psql('postgres', q{
        SELECT (SELECT max(started_at) FROM jq.job_result WHERE priority = 10)
             < (SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY started_at)
                  FROM jq.job_result WHERE priority = 0)}),
    't',
    'all urgent jobs started before the median standard job');

$node->stop;
done_testing();
