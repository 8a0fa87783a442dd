# A worker killed with pg_terminate_backend.
#   - If it dequeued inside an open transaction, the transaction rolls back:
#     its jobs are ready again at once, and another worker gets each of
#     them exactly once.
#   - If it dequeued in autocommit, its leases were committed and stay as
#     they were (state 'l', same token, same expiry): no other worker gets
#     those jobs until the lease is reclaimed (the reclaimer comes later),
#     and the lease is still good for an ack.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('terminate', extension => 1);
create_queue($node, 'postgres', 'intx');
create_queue($node, 'postgres', 'auto');
enqueue_jobs($node, 'postgres', 'intx', map { qq({"n": $_}) } 1 .. 20);
enqueue_jobs($node, 'postgres', 'auto', map { qq({"n": $_}) } 1 .. 10);

# terminate_worker(BG): kills the backend of background psql BG and waits
# until it is gone and holds no locks, so its transaction is over
sub terminate_worker
{
    my ($bg, $what) = @_;
    my $pid = $bg->query_safe('SELECT pg_backend_pid()');
    is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"),
        't', "$what: backend terminated");
    ok( $node->poll_query_until('postgres', qq{
            SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $pid)
               AND NOT EXISTS (SELECT FROM pg_locks WHERE pid = $pid)}),
        "$what: backend gone");
    # psql notices the lost connection; we only need it to exit
    $bg->quit;
}

# --- a worker in an open transaction --------------------------------------

my $w1 = $node->background_psql('postgres');
$w1->query_safe('BEGIN');
my $w1_jobs = $w1->query_safe(q{
    SELECT string_agg(payload->>'n', ',' ORDER BY job_id) FROM jq.jq_dequeue('intx', 5)});
is($w1_jobs, '1,2,3,4,5', 'worker 1 leases jobs 1-5 in an open transaction');

# meanwhile another worker skips them and takes the next five
is( $node->safe_psql('postgres', q{
        CREATE TABLE intx_deliveries AS
            SELECT job_id, lease_token, payload->>'n' AS n FROM jq.jq_dequeue('intx', 5);
        SELECT string_agg(n, ',' ORDER BY job_id) FROM intx_deliveries}),
    '6,7,8,9,10',
    'worker 2 is not blocked and gets jobs 6-10');

terminate_worker($w1, 'worker 1 (open transaction)');

# worker 1's dequeue rolled back: its five jobs are ready, never attempted
is( $node->safe_psql('postgres', q{
        SELECT string_agg(payload->>'n', ',' ORDER BY id) FROM jq.job
         WHERE queue_id = (SELECT queue_id FROM jq.queue WHERE name = 'intx')
           AND state = 'r' AND attempt = 0 AND lease_token IS NULL
           AND lease_expires_at IS NULL AND started_at IS NULL
           AND (payload->>'n')::int <= 5}),
    '1,2,3,4,5',
    'after the kill, jobs 1-5 are ready again with no trace of the lease');

# a third worker drains the queue: it gets jobs 1-5 and 11-20, once each
is( $node->safe_psql('postgres', q{
        INSERT INTO intx_deliveries
            SELECT job_id, lease_token, payload->>'n' FROM jq.jq_dequeue('intx', 100);
        SELECT string_agg(n, ',' ORDER BY n::int) FROM intx_deliveries}),
    join(',', 1 .. 20),
    'every job of the queue delivered exactly once across the workers');

# and every job completes once
is( $node->safe_psql('postgres', q{
        SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token)) FROM intx_deliveries}),
    '20', 'all 20 deliveries acked');
is( $node->safe_psql('postgres', q{
        SELECT count(*) || ',' || count(DISTINCT r.job_id) || ',' || max(r.attempts)
          FROM jq.job_result r JOIN jq.queue q USING (queue_id) WHERE q.name = 'intx'}),
    '20,20,1',
    '20 results, one per job, each after a single attempt');
is( $node->safe_psql('postgres', q{
        SELECT count(*) FROM jq.job j JOIN jq.queue q USING (queue_id) WHERE q.name = 'intx'}),
    '0', 'nothing left of queue intx in the hot table');

# --- a worker that dequeued in autocommit ----------------------------------

my $w3 = $node->background_psql('postgres');
$w3->query_safe(q{
    CREATE TABLE auto_leases AS
        SELECT job_id, lease_token, lease_expires_at, payload->>'n' AS n
          FROM jq.jq_dequeue('auto', 3)});
is($node->safe_psql('postgres', 'SELECT string_agg(n, \',\' ORDER BY job_id) FROM auto_leases'),
    '1,2,3', 'worker 3 leases jobs 1-3 in autocommit');

terminate_worker($w3, 'worker 3 (autocommit)');

# the leases are intact: leased, same token, same expiry, not yet expired
is( $node->safe_psql('postgres', q{
        SELECT count(*) FROM auto_leases l JOIN jq.job j ON j.id = l.job_id
         WHERE j.state = 'l' AND j.lease_token = l.lease_token
           AND j.lease_expires_at = l.lease_expires_at
           AND j.lease_expires_at > now() AND j.attempt = 1}),
    '3', 'after the kill, jobs 1-3 are still leased with the same token and expiry');

# other workers do not get them: they wait for the lease reclaim
is( $node->safe_psql('postgres', q{
        CREATE TABLE auto_deliveries AS
            SELECT job_id, lease_token, payload->>'n' AS n FROM jq.jq_dequeue('auto', 100);
        SELECT string_agg(n, ',' ORDER BY n::int) FROM auto_deliveries}),
    '4,5,6,7,8,9,10',
    'another worker gets only the seven jobs that were never leased');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('auto', 100)}),
    '0', 'the killed worker\'s jobs are not handed out again before the lease is reclaimed');

# the lease still stands: its token completes the job, once
is( $node->safe_psql('postgres', q{
        SELECT string_agg(jq.jq_ack(job_id, lease_token)::text, ',' ORDER BY job_id) FROM auto_leases}),
    'true,true,true', 'the killed worker\'s lease tokens still complete its jobs');
is( $node->safe_psql('postgres', q{
        SELECT string_agg(jq.jq_ack(job_id, lease_token)::text, ',' ORDER BY job_id) FROM auto_leases}),
    'false,false,false', 'but only once');

$node->stop;
done_testing();
