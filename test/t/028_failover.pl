# Failover with nothing lost (issue 17).  A primary streams to a
# synchronous standby (synchronous_standby_names names it, synchronous_commit
# is on); the pgjq worker runs on the primary.  Producers (with idempotency
# keys) and workers, bench/jqchaos as in 020_chaos.pl, run against the
# primary through a multi-host connection string
#   host=P,S port=p,s target_session_attrs=read-write
# when the primary is killed (kill -9 of the postmaster and all its
# children, as a machine would die).  Once the leases it granted have
# expired (a failover takes a moment to decide), the standby is promoted;
# the clients reconnect to it by themselves (libpq skips the dead host and,
# until the promotion, the read-only one), the workers drain the queue
# there, and the chaos suite's invariant checker (test/t/ChaosCheck.pm)
# runs on the new primary: every enqueue whose COMMIT returned is there
# exactly once, no job of a rolled-back transaction exists, no job
# completed twice, a resubmitted idempotency key returns its job, no two
# leases on a job overlapped, nothing is left leased, and the counters,
# rebuilt by the new primary's worker, equal the truth.  Besides:
#   - the standby holds exactly what the primary returned: the leases the
#     primary granted just before it died, with their tokens;
#   - the new primary's pgjq worker starts (pg_stat_activity,
#     jq.jq_worker_status()) and reclaims those leases, and every lease
#     outstanding at the failover ends (its job finishes);
#   - a producer whose last enqueue got no answer resubmits its keys on the
#     new primary: the committed ones return their jobs, each key has one
#     job;
#   - producers committed on both servers.
# With asynchronous replication the last commits before the crash can be
# missing from the standby, and these checks fail (the committed job, the
# key's job, the lease are not there).  PGJQ_CHAOS_SEED=<seed> replays the
# clients' random choices.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;
use ChaosCheck;
use IPC::Run;
use List::Util qw(max);
use Time::HiRes qw(time usleep);

my $seed = $ENV{PGJQ_CHAOS_SEED} // (int(time * 1000) % 1_000_000);
note "seed $seed (PGJQ_CHAOS_SEED=$seed replays the random choices)";

my $lease = 2;            # seconds: the dead primary's leases come back quickly
my $load_before = 8;      # seconds of load on the primary before it dies
my $load_after = 8;       # and on the promoted standby
my $t_start = time;

my $jqchaos = build_jqchaos();

# --- a primary and its synchronous standby ------------------------------------

my $primary = new_node('primary', extension => 1, init => { allows_streaming => 1 }, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.naptime' => '200ms',
    'pgjq.stats_interval' => '1s',
    'max_connections' => 50,
    'synchronous_commit' => 'on',
    'log_statement' => 'none' });
create_queue($primary, 'postgres', 'chaos', lease_seconds => $lease, max_attempts => 4,
             backoff_base => '50 milliseconds', backoff_cap => '500 milliseconds');
create_queue($primary, 'postgres', 'fo_lease', lease_seconds => $lease);
create_queue($primary, 'postgres', 'fo_keys');
my $qid = $primary->safe_psql('postgres', q{SELECT queue_id FROM jq.queue WHERE name = 'chaos'});

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
# Named only now, on the primary: a standby whose configuration names a
# synchronous standby of its own waits for one at every commit once promoted.
# The standby's walreceiver connects as its cluster_name, 'standby'.
alter_system($primary, 'synchronous_standby_names', 'standby');
ok(defined poll_fast($primary, 'postgres', q{
        SELECT sync_state = 'sync' AND state = 'streaming' FROM pg_stat_replication
         WHERE application_name = 'standby'}, 60),
   'the standby streams synchronously (pg_stat_replication.sync_state)');
is($primary->safe_psql('postgres', 'SHOW synchronous_commit'), 'on',
   'synchronous_commit is on');
is($standby->safe_psql('postgres', q{SHOW synchronous_standby_names}), '',
   'the standby names no synchronous standby of its own');
ok(defined wait_for_worker($primary, 'postgres'), 'the primary runs a pgjq worker');

# the start of each server, as jqchaos's producers log it with their ids
my $start_sql = q{SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint};
my $primary_start = $primary->safe_psql('postgres', $start_sql);
my $standby_start = $standby->safe_psql('postgres', $start_sql);

# --- the clients -------------------------------------------------------------------

my $conninfo = sprintf(q{host='%s,%s' port='%d,%d' dbname=postgres target_session_attrs=read-write},
                       $primary->host, $standby->host, $primary->port, $standby->port);
my $logdir = PostgreSQL::Test::Utils::tempdir;
my $chaos_pid = start_jqchaos($jqchaos, $logdir,
    '--conninfo', $conninfo, '--queue', 'chaos', '--producers', 3, '--workers', 4,
    '--locker', 1, '--seed', $seed, '--txn-per-sec', 12, '--lease-seconds', $lease);

# A producer of its own, for the keys: one keyed enqueue per transaction,
# each COMMIT told by a NOTICE (psql writes it to its stderr at once).
# When the primary dies, the enqueue after the last NOTICE has an unknown
# outcome.
my $keys_err = "$logdir/keys.err";
my $keyed = IPC::Run::start(
    [ 'psql', '-X', '-q', '-d', $primary->connstr('postgres'), '-c', q{
DO $$
DECLARE id bigint;
BEGIN
  FOR i IN 1..1000000 LOOP
    id := jq.jq_enqueue('fo_keys', jsonb_build_object('i', i), idempotency_key => 'fo-' || i);
    COMMIT;
    RAISE NOTICE 'committed % %', i, id;
    PERFORM pg_sleep(0.03);
  END LOOP;
END $$;} ],
    '>', '/dev/null', '2>', $keys_err);
END { eval { $keyed->kill_kill if $keyed && $keyed->pumpable; }; }

my $watch = ChaosCheck::LeaseWatch->new($primary, $qid, $t_start);
$primary->poll_query_until('postgres',
    qq{SELECT count(*) > 0 FROM jq.job_result WHERE queue_id = $qid})
  or die 'no job was ever acked';
my $t_load = time;
while (time - $t_load < $load_before)
{
    $watch->sample;
    usleep(200_000);
}
is($primary->safe_psql('postgres',
        q{SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'}),
   'sync', 'under load the standby is still the synchronous one');

# --- the primary dies ------------------------------------------------------------

# leases granted just before the crash, which nobody will ack
enqueue_jobs($primary, 'postgres', 'fo_lease', '{}', '{}', '{}');
my %granted = map { my ($id, $token, $exp) = split /\|/; ($id => [ $token, $exp ]) }
    split /\n/, $primary->safe_psql('postgres', qq{
        SELECT job_id, lease_token, extract(epoch FROM lease_expires_at)
          FROM jq.jq_dequeue('fo_lease', 3, $lease)});
is(scalar(keys %granted), 3, 'the primary grants three leases just before it dies');

# dead: gone, or a zombie nobody has reaped yet
sub dead
{
    my ($pid) = @_;
    return 1 unless alive($pid);
    open(my $fh, '<', "/proc/$pid/stat") or return 1;
    my $stat = <$fh> // '';
    return $stat =~ /.*\)\s+Z\s/s ? 1 : 0;
}
my $pm = postmaster_pid($primary);
my @kids = children_of($pm);
$primary->kill9;
kill 'KILL', @kids;
my $t_kill = time;
$watch->event(sprintf('the kill -9 of the primary at %.1f s', $t_kill - $t_start));
my $deadline = time + 15;
usleep(20_000) while (grep { !dead($_) } $pm, @kids) && time < $deadline;
ok(!grep({ !dead($_) } $pm, @kids),
   'kill -9 of the primary\'s postmaster and its ' . scalar(@kids) . ' children');
eval { $keyed->finish; };    # psql lost its connection

# the standby has replayed all it received
ok($standby->poll_query_until('postgres',
        q{SELECT pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()}),
   'the standby replays what it received');
is($standby->safe_psql('postgres', q{
        SELECT string_agg(j.id || '|' || j.lease_token || '|' || j.state::text, ',' ORDER BY j.id)
          FROM jq.job j JOIN jq.queue q USING (queue_id) WHERE q.name = 'fo_lease'}),
   join(',', map { "$_|$granted{$_}[0]|l" } sort { $a <=> $b } keys %granted),
   'the standby holds the leases the primary returned, with their tokens');
# every lease outstanding at the failover (the checker's chaos schema gets it later)
my $leases_at_failover = $standby->safe_psql('postgres', qq{
    SELECT string_agg(id || ',' || lease_token, ';') FROM jq.job
     WHERE queue_id = $qid AND state = 'l'});

# a failover takes a moment to decide: promote once the dead primary's
# leases have all expired, so that they are the new primary's to reclaim
my $expiry = max(map { $_->[1] } values %granted);
usleep(1_000_000 * ($expiry + 0.3 - time)) if $expiry + 0.3 > time;

my $log_offset = -s $standby->logfile;
my $t_promote = time;
$standby->promote;
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f', 'the standby is promoted');
$watch->node($standby);
$watch->event(sprintf('the promotion at %.1f s', $t_promote - $t_start));

$standby->wait_for_log(qr/pgjq worker started for database "postgres"/, $log_offset);
pass('a pgjq worker starts on the promoted node');
ok(defined wait_for_worker($standby, 'postgres', 60),
   'jq.jq_worker_status() on the promoted node names the worker');
is($standby->safe_psql('postgres', q{
        SELECT string_agg(backend_type, ',') FROM pg_stat_activity
         WHERE pid = (SELECT worker_pid FROM jq.jq_worker_status())}),
   'pgjq worker', 'and it shows in pg_stat_activity');

my $ids = join(',', sort { $a <=> $b } keys %granted);
my $reclaimed = poll_fast($standby, 'postgres', qq{
    SELECT bool_and(r.state = 'ready' AND r.last_error = 'lease expired' AND r.attempts = 1)
      FROM unnest(ARRAY[$ids]::bigint[]) i, jq.jq_result(i) r}, 60);
$reclaimed = time - $t_promote if defined $reclaimed;
ok(defined $reclaimed, 'the new primary\'s worker reclaims the leases the dead primary granted');
cmp_ok($reclaimed // 99, '<', 10, sprintf('within 10 s of the promotion (%.1f s)', $reclaimed // -1));

# --- the keyed producer resubmits its keys -------------------------------------------

my %noticed = slurp_file($keys_err) =~ /committed (\d+) (\d+)/g;
my $last = max(0, keys %noticed);
ok($last > 0 && !grep({ !exists $noticed{$_} } 1 .. $last),
   "the keyed producer's commits before the crash: keys 1 to $last");
# the key after the last NOTICE: its COMMIT may or may not have happened
my $unanswered = $standby->safe_psql('postgres', sprintf(q{
    SELECT count(*) FROM jq.idempotency_key k JOIN jq.queue q USING (queue_id)
     WHERE q.name = 'fo_keys' AND k.key = 'fo-%d'}, $last + 1))
  ? 'had committed' : 'had not committed';
my $resubmit = sprintf(q{
    SELECT string_agg(i || ':' || jq.jq_enqueue('fo_keys', jsonb_build_object('i', i, 'again', true),
                                                  idempotency_key => 'fo-' || i), ',' ORDER BY i)
      FROM generate_series(1, %d) i}, $last + 1);
my %again = split /[:,]/, $standby->safe_psql('postgres', $resubmit);
my @changed = grep { $again{$_} != $noticed{$_} } 1 .. $last;
is(scalar(@changed), 0, 'on the new primary every committed key returns its job')
  or diag('keys whose job changed: ' . join(' ', map { "fo-$_: $noticed{$_} -> $again{$_}" }
                                            @changed[0 .. ($#changed < 9 ? $#changed : 9)]));
is($standby->safe_psql('postgres', q{
        SELECT count(*) || ',' || count(DISTINCT k.key)
          FROM jq.job j JOIN jq.queue q USING (queue_id)
          JOIN jq.idempotency_key k ON k.queue_id = j.queue_id AND k.job_id = j.id
         WHERE q.name = 'fo_keys'}),
   ($last + 1) . ',' . ($last + 1),
   'after the resubmission each key has exactly one job, the unanswered one too');
is(join(',', map { "$_:$again{$_}" } 1 .. $last + 1),
   $standby->safe_psql('postgres', $resubmit), 'and a second resubmission changes nothing');

# --- load on the new primary, drain, check ------------------------------------------

my $t_after = time;
while (time - $t_after < $load_after)
{
    $watch->sample;
    usleep(200_000);
}
my $drain_secs = drain_and_stop($standby, $qid, $chaos_pid, $logdir, $watch);
no_crashes($primary, $standby);
my %n = %{ check_invariants(node => $standby, logdir => $logdir, qid => $qid, lease => $lease,
                            watch => $watch, min_committed => 200) };

sub q1 { return $standby->safe_psql('postgres', $_[0]); }

my ($before, $after) = split /\|/, q1(qq{
    SELECT count(*) FILTER (WHERE server = $primary_start) || '|' ||
           count(*) FILTER (WHERE server = $standby_start) FROM chaos.committed});
ok($before > 0 && $after > 0,
   "producers committed jobs on the primary ($before) and on the promoted standby ($after)");
my %client = split /[|\n]/, q1(q{
    SELECT extra || '|' || count(*) FROM chaos.ev WHERE kind = 'f' GROUP BY extra ORDER BY extra});

# the leases outstanding at the failover
q1(q{CREATE TABLE chaos.failover_lease (id bigint, token bigint)});
q1('INSERT INTO chaos.failover_lease VALUES ('
   . join('), (', split /;/, $leases_at_failover) . ')') if $leases_at_failover ne '';
my $none_sql = q{
    SELECT f.id, p.place FROM chaos.failover_lease f LEFT JOIN chaos.place p USING (id)
     WHERE p.place IS DISTINCT FROM 'd' AND p.place IS DISTINCT FROM 'c'
       AND p.place IS DISTINCT FROM 'x'};
is(q1("SELECT count(*) FROM ($none_sql) v"), '0',
   'every lease outstanding at the failover ended: its job finished on the new primary')
  or diag(q1("SELECT string_agg(row_to_json(v)::text, E'\n') FROM ($none_sql) v"));
my ($fl, $fl_acked, $fl_again) = split /\|/, q1(q{
    SELECT count(*) || '|' ||
           count(*) FILTER (WHERE p.place = 'd' AND (p.result->>'token')::bigint = f.token) || '|' ||
           count(*) FILTER (WHERE p.attempts > f.token >> 32
                               OR (p.place = 'x' AND p.last_error = 'lease expired'))
      FROM chaos.failover_lease f JOIN chaos.place p USING (id)});

is(q1('SELECT jq.counters_valid()'), 't', 'the new primary rebuilt its counters (jq.counters_valid())');
is(counters_mismatch($standby, 'postgres'), '0',
   'every lane\'s counters equal the tables on the new primary');
my $keys_sql = qq{
    SELECT k.key, k.job_id FROM jq.idempotency_key k
     WHERE k.queue_id = $qid
       AND (NOT EXISTS (SELECT FROM chaos.place p WHERE p.id = k.job_id)
            OR EXISTS (SELECT FROM jq.idempotency_key k2
                        WHERE k2.queue_id = k.queue_id AND k2.job_id = k.job_id AND k2.key <> k.key))};
is(q1("SELECT count(*) FROM ($keys_sql) v"), '0',
   'each idempotency key of the chaos queue names one existing job, and no job has two')
  or diag(q1("SELECT string_agg(row_to_json(v)::text, E'\n') FROM ($keys_sql LIMIT 10) v"));

# --- the numbers ---------------------------------------------------------------------

my $cancelled_waits = () = slurp_file($primary->logfile)
    =~ /canceling wait for synchronous replication/g;
diag(sprintf('load %.0f s on the primary, then kill -9; promoted %.1f s later; leases reclaimed '
             . '%.1f s after the promotion; drain %.1f s; whole test %.0f s; seed %s',
             $load_before, $t_promote - $t_kill, $reclaimed // -1, $drain_secs,
             time - $t_start, $seed));
diag("jobs committed: $n{committed} ($before on the primary, $after on the new one); "
     . "not committed: $n{rolled_back}; COMMIT outcome unknown: $n{unknown} ($n{unknown_exist} exist)");
diag("leases outstanding at the failover: $fl; acked by their holders: $fl_acked; "
     . "delivered again or dead-lettered after expiring: $fl_again");
diag("keyed producer: $last keys committed before the crash, key " . ($last + 1)
     . " unanswered ($unanswered); after the resubmission " . ($last + 1) . ' jobs');
diag(sprintf('client faults: %s',
             join(', ', map { "$_ $client{$_}" } sort keys %client)));
diag("true acks: $n{true_acks}; succeeded jobs whose ack reply was lost: $n{d_unseen}; "
     . "double completions: $n{double}");
diag("commits whose wait for the standby was cancelled (acknowledged unreplicated): $cancelled_waits");

$standby->stop;
done_testing();
