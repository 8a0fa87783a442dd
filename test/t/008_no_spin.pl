# The worker never spins: while an expired lease it must skip is row-locked
# by another transaction, it keeps sleeping between passes.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;

my $node = new_node('nospin', extension => 1,
    conf => { 'pgjq.database' => 'postgres', 'pgjq.stats_interval' => '1h' });
create_queue($node, 'postgres', 'q');
enqueue_jobs($node, 'postgres', 'q', '{}');
lease_and_disconnect($node, 'postgres', 'q', 1);

# hold the job's row lock past its lease expiry
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; SELECT 1 FROM jq.job FOR UPDATE;');
sleep 2;

my $before = $node->safe_psql('postgres',
    q{SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = 'postgres'});
sleep 2;
my $after = $node->safe_psql('postgres',
    q{SELECT sum(xact_commit) FROM pg_stat_database WHERE datname = 'postgres'});
my $rate = ($after - $before) / 2;
note "transactions per second in the database while the lease is locked: $rate";
cmp_ok($rate, '<', 200, 'the worker does not spin on a locked expired lease');
is($node->safe_psql('postgres', 'SELECT state FROM jq.job'), 'l',
   'the locked job was left alone');

$holder->query_safe('COMMIT');
$holder->quit;
$node->poll_query_until('postgres', q{SELECT state = 'r' FROM jq.job})
  or die 'not reclaimed after the lock went';
pass('reclaimed once the lock is released');
$node->stop;
done_testing();
