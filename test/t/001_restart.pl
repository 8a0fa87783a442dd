# Jobs and leases survive a clean restart and a crash (immediate shutdown)
# of the postmaster: every committed job is still there exactly once, and
# uncommitted enqueues are gone.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('main', extension => 1);
create_queue($node, 'postgres', 'crash');
enqueue_jobs($node, 'postgres', 'crash', map { qq({"n": $_}) } 1 .. 100);

# lease ten jobs, complete five of them
my $leased = $node->safe_psql('postgres', q{
    CREATE TABLE leases AS SELECT job_id, lease_token FROM jq.jq_dequeue('crash', 10);
    SELECT count(*) FROM leases;
});
is($leased, '10', 'ten jobs leased');
my $acked = $node->safe_psql('postgres', q{
    SELECT count(*) FILTER (WHERE jq.jq_ack(job_id, lease_token, '{"ok": true}'))
      FROM (SELECT * FROM leases ORDER BY job_id LIMIT 5) l;
});
is($acked, '5', 'five jobs acked');

# an enqueue in flight when the server crashes must vanish
my $bg = $node->background_psql('postgres');
$bg->query_safe(q{BEGIN; SELECT jq.jq_enqueue('crash', '{"n": "uncommitted"}');});

$node->stop('immediate');
$node->start;

my $counts = $node->safe_psql('postgres', q{
    SELECT (SELECT count(*) FROM jq.job WHERE state = 'r') || ',' ||
           (SELECT count(*) FROM jq.job WHERE state = 'l') || ',' ||
           (SELECT count(*) FROM jq.job_result) || ',' ||
           (SELECT count(*) FROM jq.job WHERE payload->>'n' = 'uncommitted');
});
is($counts, '90,5,5,0', 'after a crash: 90 ready, 5 leased, 5 done, uncommitted enqueue gone');

# leases survive: the holders' tokens still work after the restart
my $ok = $node->safe_psql('postgres', q{
    SELECT bool_and(jq.jq_ack(job_id, lease_token))
      FROM (SELECT * FROM leases ORDER BY job_id OFFSET 5) l;
});
is($ok, 't', 'leases taken before the crash can be acked after it');

# every job accounted for exactly once
my $total = $node->safe_psql('postgres', q{
    SELECT count(*) FROM (SELECT id FROM jq.job UNION ALL SELECT job_id FROM jq.job_result) a;
});
is($total, '100', 'all 100 committed jobs exist exactly once');

$node->restart;
is($node->safe_psql('postgres', 'SELECT count(*) FROM jq.jq_dequeue(\'crash\', 1000)'),
   '90', 'after a clean restart the 90 ready jobs are all handed out');

$node->stop;
done_testing();
