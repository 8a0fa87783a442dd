# The fault suite: producers and workers (bench/jqchaos, C and libpq) run
# against a cluster while it is crashed and restarted underneath them, and
# then an invariant checker proves from pgjq's tables and the clients' logs
# that no committed job was lost or duplicated, no rolled-back job exists,
# no job succeeded twice, no two workers held one job's lease at once, and
# the counters equal the truth.
#
# Faults, about one every two seconds for about a minute:
#   - kill -9 of the postmaster, then a start (crash recovery): once letting
#     the orphaned backends die by themselves, once killing them all with it;
#   - pg_ctl restart (fast) with leases outstanding;
#   - pg_terminate_backend of workers mid-job, of producers inside their
#     transaction (after an enqueue), and of the pgjq background worker;
# and, from jqchaos itself: workers that close their socket abruptly while
# holding leases or while their ack is on its way, workers that abandon a
# job or work past its lease, workers hit by lock_timeout and
# statement_timeout (a locker thread holds row locks on leased jobs and
# short table locks), jq.jq_fail (retry and permanent) and jq_cancel.
#
# Producers enqueue in explicit transactions (several jobs, batches, delayed
# jobs, idempotency keys, savepoints rolled back), commit or deliberately
# roll back, and log every id with what they know of its fate: committed,
# not committed, or COMMIT outcome unknown.  Workers ack with a result that
# names the job, the worker and the lease token, and log every delivery
# and every ack's outcome.  See bench/jqchaos.c for the log format.
#
# After the faults the producers stop, the workers drain the queue and stop,
# and the checker runs.  Every check is a real test.  The seed is printed;
# rerun with PGJQ_CHAOS_SEED=<seed> to replay the same random choices (the
# timing, and so the interleaving, still differs).
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use PgjqTest;
use File::Basename qw(dirname);
use File::Spec;
use List::Util qw(shuffle);
use POSIX qw(WNOHANG);
use Time::HiRes qw(time usleep);

my $seed = $ENV{PGJQ_CHAOS_SEED} // (int(time * 1000) % 1_000_000);
srand($seed);
note "seed $seed (PGJQ_CHAOS_SEED=$seed replays the random choices)";

my $lease = 2;            # seconds: jobs of dead workers come back quickly
my $producers = 3;
my $workers = 4;
my $gap_min = 1.2;        # seconds between two faults
my $gap_max = 2.4;
my $t_start = time;

# --- build the load generator --------------------------------------------

my $bench = File::Spec->rel2abs(dirname(__FILE__) . '/../../bench');
my $jqchaos = "$bench/bin/jqchaos";
my $build_log = PostgreSQL::Test::Utils::tempdir . '/build.log';
is(system("make -s -C '$bench' bin/jqchaos >'$build_log' 2>&1"), 0,
   'bench/bin/jqchaos builds')
  or die('cannot build bench/bin/jqchaos: ' . slurp_file($build_log));

# --- the cluster ----------------------------------------------------------

my $node = new_node('chaos', extension => 1, conf => {
    'pgjq.database' => 'postgres',
    'pgjq.naptime' => '200ms',
    'pgjq.stats_interval' => '1s',
    'max_connections' => 50,
    # thousands of statements a second: keep the log to what matters
    'log_statement' => 'none' });
create_queue($node, 'postgres', 'chaos', lease_seconds => $lease, max_attempts => 4,
             backoff_base => '50 milliseconds', backoff_cap => '500 milliseconds');
my $qid = $node->safe_psql('postgres', q{SELECT queue_id FROM jq.queue WHERE name = 'chaos'});

# --- helpers --------------------------------------------------------------

# the postmaster's pid, from postmaster.pid
sub postmaster_pid
{
    my $f = $node->data_dir . '/postmaster.pid';
    return undef unless -f $f;
    my ($pid) = split /\n/, slurp_file($f);
    return $pid;
}

# the pids of PARENT's children, from /proc
sub children_of
{
    my ($parent) = @_;
    my @kids;
    opendir(my $d, '/proc') or return ();
    for my $p (grep { /^\d+$/ } readdir $d)
    {
        open(my $fh, '<', "/proc/$p/stat") or next;
        my $stat = <$fh>;
        close $fh;
        next unless defined $stat;
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        push @kids, $p if $stat =~ /.*\)\s+\S+\s+(\d+)/s && $1 == $parent;
    }
    closedir $d;
    return @kids;
}

sub alive { my ($pid) = @_; return kill(0, $pid) ? 1 : 0; }

# a query that may fail while the server is going down: undef then
sub try_psql
{
    my ($sql) = @_;
    my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_die => 0);
    return $ret == 0 ? $out : undef;
}

# How long past its expiry the oldest expired lease is still there, counted
# from the background worker's start if that is later: while the worker is
# dead (the postmaster restarts it 5 s after a pg_terminate_backend) or the
# server is down, nobody reclaims.  The worst seen, and when; and the worst
# counted from the expiry alone, for the record.
my ($max_overdue, $max_overdue_raw) = (0, 0);
my $overdue_at = 'never';
my $last_fault = 'none yet';
sub sample_leases
{
    my $o = try_psql(qq{
        SELECT extract(epoch FROM least(clock_timestamp() - min(j.lease_expires_at),
                                        clock_timestamp() - w.backend_start)) || '|' ||
               extract(epoch FROM clock_timestamp() - min(j.lease_expires_at))
          FROM jq.job j,
               (SELECT min(backend_start) AS backend_start FROM pg_stat_activity
                 WHERE backend_type = 'pgjq worker') w
         WHERE j.queue_id = $qid AND j.lease_expires_at < clock_timestamp()
           AND w.backend_start IS NOT NULL
         GROUP BY w.backend_start});
    return unless defined $o && $o =~ /^([\d.]+)\|([\d.]+)$/;
    my ($since_worker, $raw) = ($1, $2);
    $max_overdue_raw = $raw if $raw > $max_overdue_raw;
    if ($since_worker > $max_overdue)
    {
        $max_overdue = $since_worker;
        $overdue_at = sprintf('at %.1f s, after %s', time - $t_start, $last_fault);
    }
}

sub leased_now
{
    return try_psql(qq{SELECT count(*) FROM jq.job WHERE queue_id = $qid AND state = 'l'}) // '?';
}

# --- the faults -----------------------------------------------------------

my %faults;               # kind => how many took effect
my %leases_at;            # kind => leases outstanding when it hit

sub terminate_one
{
    my ($kind, $where, $tries) = @_;
    for (1 .. $tries)
    {
        my $r = try_psql(qq{
            SELECT pg_terminate_backend(pid)
              FROM (SELECT pid FROM pg_stat_activity WHERE $where
                     ORDER BY random() LIMIT 1) s});
        if (defined $r && $r eq 't')
        {
            $faults{$kind}++;
            return 1;
        }
        usleep(25_000);
    }
    return 0;
}

# kill -9 of the postmaster; ALL: its children too, at once (else they find
# the postmaster gone and exit by themselves); then crash recovery
sub crash
{
    my ($all) = @_;
    my $pm = postmaster_pid();
    my @kids = children_of($pm);
    push @{ $leases_at{kill9} }, leased_now();
    $node->kill9;
    kill 'KILL', @kids if $all;
    # a new postmaster refuses to start while old backends hold shared memory
    my $deadline = time + 15;
    while (grep { alive($_) } @kids)
    {
        if (time > $deadline)
        {
            kill 'KILL', grep { alive($_) } @kids;
            $deadline = time + 5;
        }
        usleep(50_000);
    }
    $node->start;
    $faults{ $all ? 'kill9_all' : 'kill9' }++;
}

sub fast_restart
{
    push @{ $leases_at{restart} }, leased_now();
    $node->restart;    # pg_ctl restart: fast mode
    $faults{restart}++;
}

sub fault
{
    my ($kind) = @_;
    if ($kind eq 'term_worker')
    {
        # workers holding jobs (their last statement leased some) or mid-statement first
        terminate_one($kind,
            q{application_name LIKE 'chaos_worker%'
              AND (state = 'active' OR query LIKE '%jq_dequeue%')}, 40)
          or terminate_one($kind, q{application_name LIKE 'chaos_worker%'}, 40);
    }
    elsif ($kind eq 'term_producer')
    {
        # inside its transaction, after an enqueue (it has an xid)
        terminate_one($kind,
            q{application_name LIKE 'chaos_producer%' AND backend_xid IS NOT NULL}, 80);
    }
    elsif ($kind eq 'term_bgworker')
    {
        # mid-pass if we can catch it there (it sleeps most of the time);
        # the postmaster restarts it after 5 s
        terminate_one($kind, q{backend_type = 'pgjq worker' AND state = 'active'}, 40)
          or terminate_one($kind, q{backend_type = 'pgjq worker'}, 300);
    }
    elsif ($kind eq 'kill9')     { crash(0) }
    elsif ($kind eq 'kill9_all') { crash(1) }
    elsif ($kind eq 'restart')   { fast_restart() }
    else { die "unknown fault $kind" }
}

# --- run ------------------------------------------------------------------

my $logdir = PostgreSQL::Test::Utils::tempdir;
my $chaos_out = "$logdir/jqchaos.out";
my $chaos_pid = fork();
die "fork: $!" unless defined $chaos_pid;
if ($chaos_pid == 0)
{
    # the child must never run the parent's END blocks (they stop the node)
    open(STDOUT, '>', $chaos_out) or POSIX::_exit(127);
    open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
    {
        exec($jqchaos, '--conninfo', $node->connstr('postgres'), '--queue', 'chaos',
             '--logdir', $logdir, '--producers', $producers, '--workers', $workers,
             '--locker', 1, '--seed', $seed, '--txn-per-sec', 12,
             '--lease-seconds', $lease);
    }
    print STDERR "exec $jqchaos: $!\n";
    POSIX::_exit(127);
}
END { kill 'KILL', $chaos_pid if $chaos_pid && alive($chaos_pid); }

# warm up: jobs flowing, leases out
$node->poll_query_until('postgres',
    qq{SELECT count(*) > 0 FROM jq.job_result WHERE queue_id = $qid})
  or die 'no job was ever acked';

my @light = shuffle((('term_worker') x 12, ('term_producer') x 9, ('term_bgworker') x 3));
my @heavy = ('kill9', 'restart', 'kill9_all', 'restart');
my @schedule;
my $per = int(@light / (@heavy + 1));
for my $h (@heavy)
{
    push @schedule, splice(@light, 0, $per), $h;
}
push @schedule, @light;

for my $kind (@schedule)
{
    my $next = time + $gap_min + rand($gap_max - $gap_min);
    while (time < $next)
    {
        sample_leases();
        usleep(200_000);
    }
    my $t0 = time;
    my $leased = leased_now();
    fault($kind);
    $last_fault = sprintf('%s at %.1f s', $kind, $t0 - $t_start);
    note sprintf('%5.1f s: %s (%s leases out; took %.1f s)', $t0 - $t_start, $kind, $leased,
                 time - $t0);
}
my $chaos_secs = time - $t_start;

# --- drain ----------------------------------------------------------------

append_to_file("$logdir/stop-producers", '');
my $stop_t0 = time;
usleep(100_000) while !-e "$logdir/producers-done" && time - $stop_t0 < 60;
-e "$logdir/producers-done" or die 'producers did not stop';

my $drained = 0;
my $drain_t0 = time;
while (time - $drain_t0 < 90)
{
    sample_leases();
    if ((try_psql(qq{SELECT count(*) FROM jq.job WHERE queue_id = $qid}) // '') eq '0')
    {
        $drained = 1;
        last;
    }
    usleep(200_000);
}
ok($drained, 'workers drain the queue: nothing ready, scheduled or leased is left')
  or diag('left in jq.job: ' . $node->safe_psql('postgres', qq{
        SELECT string_agg(format('%s %s attempt %s expires %s', id, state, attempt,
                                 lease_expires_at), E'\n')
          FROM jq.job WHERE queue_id = $qid}));
my $drain_secs = time - $drain_t0;

append_to_file("$logdir/stop-workers", '');
my $status;
my $deadline = time + 60;
while (time < $deadline)
{
    my $r = waitpid($chaos_pid, WNOHANG);
    if ($r == $chaos_pid) { $status = $?; last; }
    usleep(100_000);
}
if (!defined $status)
{
    kill 'KILL', $chaos_pid;
    waitpid($chaos_pid, 0);
}
is($status, 0, 'jqchaos stops by itself and exits 0');
$chaos_pid = undef;

# errors the clients did not expect (only timeouts are): a unique violation
# in jq.job_result, say, would mean a job completed twice
my @unexpected = grep { /unexpected error/ } split /\n/, slurp_file($chaos_out);
is(scalar(@unexpected), 0, 'the clients saw no error besides timeouts and lost connections')
  or diag(join("\n", @unexpected[0 .. ($#unexpected < 19 ? $#unexpected : 19)]));

# no backend crashed by itself (our kill -9s leave no such line)
my $serverlog = slurp_file($node->logfile);
my @crashes = grep { /terminated by signal|PANIC|TRAP:|was terminated by exception/ }
    split /\n/, $serverlog;
is(scalar(@crashes), 0, 'no server process crashed or panicked')
  or diag(join("\n", @crashes));

# --- load the clients' logs -----------------------------------------------

my $all = "$logdir/all.tsv";
open(my $allfh, '>', $all) or die;
opendir(my $dh, $logdir) or die;
for my $f (sort grep { /^(producer|worker|locker)-\d+\.log$/ } readdir $dh)
{
    my ($role) = $f =~ /^(\w+)-/;
    open(my $in, '<', "$logdir/$f") or die;
    while (my $line = <$in>)
    {
        # a line cut short cannot happen (each is written in one go and the
        # process exited), but never load half a line
        next unless $line =~ /\n\z/ && ($line =~ tr/\t//) == 4;
        print $allfh "$role\t$line";
    }
    close $in;
}
closedir $dh;
close $allfh;

$node->safe_psql('postgres', qq{
    CREATE SCHEMA chaos;
    CREATE TABLE chaos.ev (role text, kind text, id bigint, token bigint, actor int, extra text);
    COPY chaos.ev FROM '$all';
    CREATE INDEX ON chaos.ev (kind, id);
    ANALYZE chaos.ev;
    -- where each job of the queue is now: r s l (jq.job), d c (jq.job_result), x (dead)
    CREATE VIEW chaos.place AS
        SELECT id, state::text AS place, NULL::jsonb AS result, attempt AS attempts,
               lease_token, errors -> -1 ->> 'error' AS last_error
          FROM jq.job WHERE queue_id = $qid
        UNION ALL
        SELECT job_id, state::text, result, attempts, NULL, last_error FROM jq.job_result
         WHERE queue_id = $qid
        UNION ALL
        SELECT job_id, 'x', NULL, attempts, lease_token, last_error FROM jq.dead_letter
         WHERE queue_id = $qid;
    -- server: the start of the server (us) that gave out the id.  A
    -- sequence value used only by a transaction that never committed can
    -- come again after a crash (its WAL was never flushed): then the id is
    -- logged not committed under one server and committed under a later one
    CREATE VIEW chaos.committed AS
        SELECT DISTINCT id, token AS server FROM chaos.ev WHERE role = 'producer' AND kind = 'C';
    CREATE VIEW chaos.rolled_back AS
        SELECT DISTINCT id, token AS server FROM chaos.ev WHERE role = 'producer' AND kind = 'R';
    CREATE VIEW chaos.unknown AS
        SELECT DISTINCT id, token AS server FROM chaos.ev WHERE role = 'producer' AND kind = 'U';
    -- ids not committed under one server and given out again after a crash
    -- to a job that committed: the existing job is the later one
    CREATE VIEW chaos.reused AS
        SELECT r.id, r.server AS first_server, c.server AS reused_server
          FROM (SELECT id, server FROM chaos.rolled_back UNION SELECT id, server FROM chaos.unknown) r
          JOIN chaos.committed c ON c.id = r.id AND c.server > r.server;
    -- deliveries known to have committed, with the lease's start and expiry
    -- (us) and how much of it was left when jq_dequeue returned (ms); a
    -- delivery inside a worker's transaction logs none of these (extra 'txn')
    CREATE VIEW chaos.delivery AS
        SELECT id, token, token >> 32 AS n, actor, expires - $lease * 1000000 AS started,
               expires, left_ms
          FROM (SELECT id, token, actor,
                       CASE WHEN extra ~ '^[0-9]+ -?[0-9]+\$'
                            THEN split_part(extra, ' ', 1)::bigint END AS expires,
                       CASE WHEN extra ~ '^[0-9]+ -?[0-9]+\$'
                            THEN split_part(extra, ' ', 2)::int END AS left_ms
                  FROM chaos.ev WHERE kind = 'D') d;
});

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# checks that count violations: 0 passes; else show a few
sub none
{
    my ($name, $sql) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $n = q1("SELECT count(*) FROM ($sql) v");
    is($n, '0', $name)
      or diag("$name: $n violations, e.g.\n"
              . q1("SELECT row_to_json(v) FROM ($sql LIMIT 10) v"));
}

# --- the invariants ------------------------------------------------------

my %n;
$n{committed} = q1('SELECT count(*) FROM chaos.committed');
$n{rolled_back} = q1('SELECT count(*) FROM chaos.rolled_back');
$n{unknown} = q1('SELECT count(*) FROM chaos.unknown');
$n{unknown_exist} = q1('SELECT count(*) FROM chaos.unknown u WHERE EXISTS (SELECT FROM chaos.place p WHERE p.id = u.id)');
ok($n{committed} > 500, "producers committed jobs ($n{committed})");

none('no id is logged both committed and not committed by one server (client log sanity)', q{
    SELECT c.id FROM chaos.committed c
      JOIN (SELECT id, server FROM chaos.rolled_back UNION SELECT id, server FROM chaos.unknown) r
        ON r.id = c.id AND r.server >= c.server});
note('ids given out again after a crash (their first transaction never committed): '
    . q1('SELECT count(DISTINCT id) FROM chaos.reused'));

# invariant 4: every committed job is somewhere, exactly once
none('no committed job is lost', q{
    SELECT c.id FROM chaos.committed c
     WHERE NOT EXISTS (SELECT FROM chaos.place p WHERE p.id = c.id)});
none('no job is in two places or twice in one (jq.job, jq.job_result, jq.dead_letter)', q{
    SELECT id, string_agg(place, ',') FROM chaos.place GROUP BY id HAVING count(*) > 1});

# invariant 1: a job exists iff its transaction committed
none('a job whose COMMIT outcome the producer never learnt exists at most once', q{
    SELECT u.id, count(*) FROM chaos.unknown u JOIN chaos.place p USING (id)
     GROUP BY u.id HAVING count(*) > 1});
none('no job of a rolled-back transaction (or savepoint) exists', q{
    SELECT r.id FROM chaos.rolled_back r JOIN chaos.place p USING (id)
     WHERE NOT EXISTS (SELECT FROM chaos.reused u WHERE u.id = r.id)});
none('no job of a rolled-back transaction was ever delivered', q{
    SELECT DISTINCT r.id FROM chaos.rolled_back r JOIN chaos.ev e USING (id)
     WHERE e.role = 'worker' AND e.kind IN ('D', 'T')
       AND NOT EXISTS (SELECT FROM chaos.reused u WHERE u.id = r.id)
    UNION
    -- a reused id: delivered only once the server that reused it ran
    SELECT DISTINCT d.id FROM chaos.reused u JOIN chaos.delivery d USING (id)
     WHERE d.started < u.reused_server});
none('every job in the tables was committed, or its COMMIT outcome is unknown (no phantoms)', q{
    SELECT p.id FROM chaos.place p
     WHERE NOT EXISTS (SELECT FROM chaos.committed c WHERE c.id = p.id)
       AND NOT EXISTS (SELECT FROM chaos.unknown u WHERE u.id = p.id)});
none('every delivered job exists', q{
    SELECT DISTINCT e.id FROM chaos.ev e WHERE e.kind IN ('D')
       AND NOT EXISTS (SELECT FROM chaos.place p WHERE p.id = e.id)});

# invariant 6 under faults: a resubmitted key returns the committed job
none('a resubmitted idempotency key returns the job it committed', q{
    SELECT id, token FROM chaos.ev WHERE kind = 'K' AND id <> token});

# no double completion
$n{true_acks} = q1(q{SELECT count(*) FROM chaos.ev WHERE kind = 'A'});
$n{double} = q1(q{SELECT count(*) FROM (SELECT id FROM chaos.ev WHERE kind = 'A'
                                        GROUP BY id HAVING count(*) > 1) d});
is($n{double}, '0', 'no job was acked true twice (double completions: 0)')
  or diag(q1(q{SELECT string_agg(format('%s by %s', id, actors), E'\n')
                 FROM (SELECT id, string_agg(actor || ':' || token, ' ') actors
                         FROM chaos.ev WHERE kind = 'A' GROUP BY id HAVING count(*) > 1
                        LIMIT 10) d}));
none('every true ack is the completion on record (result names its job, worker and token)', q{
    SELECT a.id, a.token, a.actor, p.place, p.result FROM chaos.ev a
      LEFT JOIN chaos.place p ON p.id = a.id
     WHERE a.kind = 'A'
       AND (p.place IS DISTINCT FROM 'd' OR (p.result->>'job')::bigint <> a.id
            OR (p.result->>'token')::bigint <> a.token
            OR (p.result->>'worker')::int <> a.actor)});
none('every succeeded job was acked true, or by an ack whose outcome the worker never learnt', q{
    SELECT p.id, p.result FROM chaos.place p
     WHERE p.place = 'd'
       AND ((p.result->>'job')::bigint IS DISTINCT FROM p.id
            OR NOT EXISTS (SELECT FROM chaos.ev e
                            WHERE e.id = p.id AND e.kind IN ('A', 'E', 'L')
                              AND e.token = (p.result->>'token')::bigint
                              AND e.actor = (p.result->>'worker')::int))});
$n{d_rows} = q1(q{SELECT count(*) FROM chaos.place WHERE place = 'd'});
$n{d_unseen} = q1(q{
    SELECT count(*) FROM chaos.place p WHERE p.place = 'd'
       AND NOT EXISTS (SELECT FROM chaos.ev e WHERE e.id = p.id AND e.kind = 'A')});
is($n{d_rows} - $n{d_unseen}, $n{true_acks},
   "succeeded jobs = true acks + acks whose reply was lost ($n{d_rows} = $n{true_acks} + $n{d_unseen})");

none('an ack that returned false did not complete the job (unless an earlier ack of that lease went unanswered)', q{
    SELECT s.id, s.token, s.actor FROM chaos.ev s JOIN chaos.place p ON p.id = s.id
     WHERE s.kind = 'S' AND p.place = 'd'
       AND (p.result->>'token')::bigint = s.token AND (p.result->>'worker')::int = s.actor
       AND NOT EXISTS (SELECT FROM chaos.ev e WHERE e.id = s.id AND e.token = s.token
                          AND e.kind IN ('E', 'L'))});

# cancels
none('no cancelled job was acked true', q{
    SELECT p.id FROM chaos.place p JOIN chaos.ev e ON e.id = p.id AND e.kind = 'A'
     WHERE p.place = 'c'});
none('every job whose jq_cancel returned true ended cancelled', q{
    SELECT e.id, p.place FROM chaos.ev e LEFT JOIN chaos.place p USING (id)
     WHERE e.kind = 'X' AND e.extra = 't' AND p.place IS DISTINCT FROM 'c'});

# invariants 2 and 3: one lease at a time, fencing
none('every delivery has its own lease token and delivery count', q{
    SELECT id, n, count(*) FROM chaos.delivery GROUP BY id, n HAVING count(*) > 1});
# (fails now and then: jq_dequeue dates a lease from before it waited for
# locks, see the lock-wait test at the end)
none('no job is delivered again while an earlier lease on it runs (unless failed early)', q{
    SELECT d1.id, d1.n AS n1, d1.actor AS actor1, d1.expires AS expires1, d2.n AS n2,
           d2.actor AS actor2, d2.started AS started2, d2.left_ms AS left2
      FROM chaos.delivery d1 JOIN chaos.delivery d2 ON d2.id = d1.id AND d2.n > d1.n
     WHERE d2.started IS NOT NULL AND d1.expires IS NOT NULL
       AND d2.started < d1.expires
       AND NOT EXISTS (SELECT FROM chaos.ev f WHERE f.id = d1.id AND f.token = d1.token
                          AND (f.kind = 'G' OR (f.kind = 'F' AND f.extra <> 'null')))});
none('no job is delivered again after the ack that completed it', q{
    SELECT p.id FROM chaos.place p JOIN chaos.delivery d ON d.id = p.id
     WHERE p.place = 'd' AND d.n > ((p.result->>'token')::bigint >> 32)});
none('attempts equal the delivery count of the last lease token', q{
    SELECT id, place, attempts FROM chaos.place
     WHERE (place = 'd' AND attempts <> ((result->>'token')::bigint >> 32))
        OR (place = 'x' AND attempts <> (lease_token >> 32))});

# after the drain: no lease left; counters equal the truth
is(q1(qq{SELECT count(*) FROM jq.job WHERE queue_id = $qid AND state = 'l'}), '0',
   'no leased job is left (every lease was acked, failed or reclaimed)');
# naptime 0.2 s, plus a counter rebuild after a start (it waits up to 2 s
# for locks), the locker's locks (0.4 s) and a busy machine
ok($max_overdue < 6,
   sprintf('expired leases are reclaimed promptly once the background worker runs '
           . '(longest seen %.1f s past expiry or the worker\'s start, %s; %.1f s past expiry alone)',
           $max_overdue, $overdue_at, $max_overdue_raw));

wait_for_counters($node, 'postgres', 'chaos')
  or die 'counters never became valid';
none('counters (jq.counters) equal the truth counted from the tables', qq{
    WITH truth AS (
        SELECT count(*) FILTER (WHERE place = 'r') AS ready,
               count(*) FILTER (WHERE place = 's') AS scheduled,
               count(*) FILTER (WHERE place = 'l') AS leased,
               count(*) FILTER (WHERE place = 'x') AS dead,
               count(*) AS enqueued_total,
               count(*) FILTER (WHERE place = 'd') AS succeeded_total,
               count(*) FILTER (WHERE place = 'x') AS dead_lettered_total,
               count(*) FILTER (WHERE place = 'c') AS cancelled_total
          FROM chaos.place),
    c AS (
        SELECT coalesce(sum(ready), 0) AS c_ready, coalesce(sum(scheduled), 0) AS c_scheduled,
               coalesce(sum(leased), 0) AS c_leased, coalesce(sum(dead), 0) AS c_dead,
               coalesce(sum(enqueued_total), 0) AS c_enqueued_total,
               coalesce(sum(succeeded_total), 0) AS c_succeeded_total,
               coalesce(sum(dead_lettered_total), 0) AS c_dead_lettered_total,
               coalesce(sum(cancelled_total), 0) AS c_cancelled_total
          FROM jq.counters() WHERE queue_id = $qid)
    SELECT * FROM truth, c
     WHERE (ready, scheduled, leased, dead, enqueued_total,
            succeeded_total, dead_lettered_total, cancelled_total)
           IS DISTINCT FROM
           (c_ready, c_scheduled, c_leased, c_dead, c_enqueued_total,
            c_succeeded_total, c_dead_lettered_total, c_cancelled_total)});
none('jq.queue_stats shows the same depth', qq{
    SELECT s.* FROM jq.queue_stats s,
           (SELECT count(*) FILTER (WHERE place = 'r') AS r, count(*) FILTER (WHERE place = 's') AS s,
                   count(*) FILTER (WHERE place = 'l') AS l, count(*) FILTER (WHERE place = 'x') AS x
              FROM chaos.place) t
     WHERE s.queue = 'chaos'
       AND (s.ready, s.scheduled, s.in_flight, s.dead) IS DISTINCT FROM (t.r, t.s, t.l, t.x)});

# --- the faults really happened -------------------------------------------

my %client = split /[|\n]/, q1(q{
    SELECT extra || '|' || count(*) FROM chaos.ev WHERE kind = 'f' GROUP BY extra ORDER BY extra});
for my $k (qw(kill9 kill9_all restart term_worker term_producer term_bgworker))
{
    ok(($faults{$k} // 0) > 0, "fault injected: $k (" . ($faults{$k} // 0) . ')');
}
for my $k (qw(drop drop_ack lock_timeout statement_timeout abandon slow rowlock tablelock))
{
    ok(($client{$k} // 0) > 0, "fault injected: $k (" . ($client{$k} // 0) . ')');
}

# --- the numbers ------------------------------------------------------------

my %place = split /[|\n]/, q1(q{
    SELECT place || '|' || count(*) FROM chaos.place GROUP BY place ORDER BY place});
# every delivery after a job's first came from a lease reclaim or a jq_fail
# retry; a reclaim of a last attempt dead-letters the job instead
my $redeliveries = q1(q{SELECT coalesce(sum(attempts - 1), 0) FROM chaos.place WHERE attempts > 0});
my $fail_retries = q1(q{SELECT count(*) FROM chaos.ev WHERE kind = 'F' AND extra IN ('ready', 'scheduled')});
my $expired_dead = q1(q{SELECT count(*) FROM chaos.place WHERE place = 'x' AND last_error = 'lease expired'});
my $lost = q1(q{SELECT count(*) FROM chaos.committed c
                 WHERE NOT EXISTS (SELECT FROM chaos.place p WHERE p.id = c.id)});
my $reclaimed_now = q1(q{
    SELECT count(*) FROM chaos.place WHERE place = 'd' AND attempts > 1});

diag(sprintf('chaos %.0f s (%d faults), drain %.1f s, whole test %.0f s; seed %s',
             $chaos_secs, scalar(@schedule), $drain_secs, time - $t_start, $seed));
diag("jobs committed: $n{committed}; not committed (rolled back, savepoint, error): $n{rolled_back}; "
     . "COMMIT outcome unknown: $n{unknown} ($n{unknown_exist} exist)");
diag(sprintf('final: succeeded %d, cancelled %d, dead %d, left %d',
             $place{d} // 0, $place{c} // 0, $place{x} // 0,
             ($place{r} // 0) + ($place{s} // 0) + ($place{l} // 0)));
diag(sprintf('faults (server side): %s',
             join(', ', map { "$_ $faults{$_}" } sort keys %faults)));
diag(sprintf('leases outstanding at kill -9: %s; at fast restart: %s',
             join('/', @{ $leases_at{kill9} // [] }), join('/', @{ $leases_at{restart} // [] })));
diag(sprintf('faults (client side): %s',
             join(', ', map { "$_ $client{$_}" } grep { $_ ne 'reconnect' } sort keys %client)));
diag(sprintf('reclaims: about %d (redeliveries %d less jq_fail retries seen %d, plus %d '
             . 'dead-lettered at lease expiry); jobs succeeded after more than one attempt: %d',
             $redeliveries - $fail_retries + $expired_dead, $redeliveries, $fail_retries,
             $expired_dead, $reclaimed_now));
diag("true acks: $n{true_acks}; succeeded jobs whose ack reply was lost: $n{d_unseen}");
diag("jobs lost: $lost; double completions: $n{double}");
diag('shortest lease left when jq_dequeue returned: '
     . q1(q{SELECT min(left_ms) FROM chaos.delivery}) . " ms of ${lease}000");

# --- a dequeue that waits for a lock ----------------------------------------
# Found by this suite (the overlap check above fails now and then):
# jq_dequeue dates a lease from the moment it is called, before it has
# waited for locks on jq.job (here a table lock; in production, say, the
# counter rebuild's LOCK TABLE ... IN SHARE MODE after every start, which
# waits up to 2 s and queues dequeues behind it).  The lease is then
# shorter by the wait, or over before the worker gets it: the job is
# reclaimed and a second worker runs it while the first still does.
create_queue($node, 'postgres', 'lockwait', lease_seconds => 3);
enqueue_jobs($node, 'postgres', 'lockwait', '{}');
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE jq.job IN EXCLUSIVE MODE;');
my $w1 = $node->background_psql('postgres');
$w1->query_until(qr/dequeuing/, q{\echo dequeuing
CREATE TEMP TABLE got AS
    SELECT job_id, lease_token, lease_expires_at - clock_timestamp() AS lease_left
      FROM jq.jq_dequeue('lockwait', 1, 3);
});
$node->poll_query_until('postgres', q{
    SELECT count(*) = 1 FROM pg_stat_activity
     WHERE wait_event_type = 'Lock' AND query LIKE '%jq.jq_dequeue(''lockwait''%'})
  or die 'the dequeue never waited for the lock';
usleep(3_500_000);    # longer than the lease it asked for
$locker->query_safe('COMMIT');
$locker->quit;
my $left = $w1->query_safe(q{SELECT round(extract(epoch FROM lease_left), 2) FROM got});
ok($left > 2, "a dequeue that waited 3.5 s for a lock gets a whole 3 s lease (left on return: $left s)");
usleep(700_000);    # the background worker reclaims an expired lease within 0.2 s
is($node->safe_psql('postgres', q{SELECT count(*) FROM jq.jq_dequeue('lockwait', 1, 60)}), '0',
   'no other worker gets that job while its lease runs');
is($w1->query_safe(q{SELECT jq.jq_ack(job_id, lease_token) FROM got}), 't',
   'and the first worker\'s ack is accepted');
$w1->quit;

$node->stop;
done_testing();
