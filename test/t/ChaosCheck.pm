# The chaos suite's shared pieces, used by test/t/020_chaos.pl (crashes and
# restarts of one cluster) and test/t/028_failover.pl (a failover to a
# synchronous standby): building and running bench/jqchaos (producers and
# workers that log what they know of every job's fate), watching how long
# expired leases stay leased, draining and stopping the clients, killing a
# postmaster with its children, and the invariant checker that proves from
# pgjq's tables and the clients' logs that no committed job was lost or
# duplicated, no rolled-back job exists, no job succeeded twice, no two
# workers held one job's lease at once, and the counters equal the truth.
# Every check is a real test.  See bench/jqchaos.c for the log format.
package ChaosCheck;

use strict;
use warnings;
use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Utils;
use PgjqTest ();
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(build_jqchaos start_jqchaos drain_and_stop no_crashes
  check_invariants try_psql postmaster_pid children_of alive);

# --- processes --------------------------------------------------------------

# postmaster_pid(NODE): the postmaster's pid, from postmaster.pid
sub postmaster_pid
{
    my ($node) = @_;
    my $f = $node->data_dir . '/postmaster.pid';
    return undef unless -f $f;
    my ($pid) = split /\n/, slurp_file($f);
    return $pid;
}

# children_of(PID): the pids of PID's children, from /proc
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

# try_psql(NODE, SQL): a query that may fail while the server is down or
# going down: undef then
sub try_psql
{
    my ($node, $sql) = @_;
    my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_die => 0);
    return $ret == 0 ? $out : undef;
}

# --- the load generator -----------------------------------------------------

# build_jqchaos(): builds bench/bin/jqchaos (a test); returns its path
sub build_jqchaos
{
    my $bench = File::Spec->rel2abs(dirname(__FILE__) . '/../../bench');
    my $build_log = PostgreSQL::Test::Utils::tempdir . '/build.log';
    is(system("make -s -C '$bench' bin/jqchaos >'$build_log' 2>&1"), 0,
       'bench/bin/jqchaos builds')
      or die('cannot build bench/bin/jqchaos: ' . slurp_file($build_log));
    return "$bench/bin/jqchaos";
}

my %started;    # pid => 1: killed at exit if still running

# start_jqchaos(JQCHAOS, LOGDIR, ARGS...): runs jqchaos with --logdir LOGDIR
# and ARGS (--conninfo ... --seed ...), its output in LOGDIR/jqchaos.out;
# returns its pid
sub start_jqchaos
{
    my ($jqchaos, $logdir, @args) = @_;
    my $out = "$logdir/jqchaos.out";
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0)
    {
        # the child must never run the parent's END blocks (they stop the node)
        open(STDOUT, '>', $out) or POSIX::_exit(127);
        open(STDERR, '>&', \*STDOUT) or POSIX::_exit(127);
        {
            exec($jqchaos, '--logdir', $logdir, @args);
        }
        print STDERR "exec $jqchaos: $!\n";
        POSIX::_exit(127);
    }
    $started{$pid} = 1;
    return $pid;
}
END { kill 'KILL', grep { alive($_) } keys %started; }

# drain_and_stop(NODE, QID, PID, LOGDIR, WATCH): stops jqchaos's producers,
# lets its workers drain queue QID on NODE (WATCH, a LeaseWatch, samples
# meanwhile), stops them, and checks that the queue drained, that jqchaos
# exited 0 and that its clients saw no error they did not expect (tests).
# Returns how long the drain took (s).
sub drain_and_stop
{
    my ($node, $qid, $pid, $logdir, $watch) = @_;

    append_to_file("$logdir/stop-producers", '');
    my $stop_t0 = time;
    usleep(100_000) while !-e "$logdir/producers-done" && time - $stop_t0 < 60;
    -e "$logdir/producers-done" or die 'producers did not stop';

    my $drained = 0;
    my $drain_t0 = time;
    while (time - $drain_t0 < 90)
    {
        $watch->sample;
        if ((try_psql($node, qq{SELECT count(*) FROM jq.job WHERE queue_id = $qid}) // '') eq '0')
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
        my $r = waitpid($pid, WNOHANG);
        if ($r == $pid) { $status = $?; last; }
        usleep(100_000);
    }
    if (!defined $status)
    {
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
    delete $started{$pid};
    is($status, 0, 'jqchaos stops by itself and exits 0');

    # errors the clients did not expect (only timeouts are): a unique violation
    # in jq.job_result, say, would mean a job completed twice
    my @unexpected = grep { /unexpected error/ } split /\n/, slurp_file("$logdir/jqchaos.out");
    is(scalar(@unexpected), 0, 'the clients saw no error besides timeouts and lost connections')
      or diag(join("\n", @unexpected[0 .. ($#unexpected < 19 ? $#unexpected : 19)]));
    return $drain_secs;
}

# no_crashes(NODES...): no backend of these nodes crashed by itself (a test;
# kill -9 of a postmaster with or without its children leaves no such line)
sub no_crashes
{
    my @crashes;
    for my $node (@_)
    {
        push @crashes, grep { /terminated by signal|PANIC|TRAP:|was terminated by exception/ }
            split /\n/, slurp_file($node->logfile);
    }
    is(scalar(@crashes), 0, 'no server process crashed or panicked')
      or diag(join("\n", @crashes));
}

# --- expired leases -----------------------------------------------------------

# How long past its expiry the oldest expired lease of a queue is still
# there, counted from the background worker's start if that is later: while
# the worker is dead (the postmaster restarts it 5 s after a
# pg_terminate_backend), the server is down or not yet promoted, nobody
# reclaims.  The worst seen, and when (the last event named before it); and
# the worst counted from the expiry alone, for the record.
package ChaosCheck::LeaseWatch;

use Time::HiRes qw(time);

# new(NODE, QID, T0): watches queue QID on NODE; times are noted from T0
sub new
{
    my ($class, $node, $qid, $t0) = @_;
    return bless { node => $node, qid => $qid, t0 => $t0, max_overdue => 0,
                   max_overdue_raw => 0, overdue_at => 'never', last_event => 'none yet' },
      $class;
}

# node(NODE): watch NODE from now on (a promoted standby)
sub node { my ($self, $node) = @_; $self->{node} = $node; }

# event(TEXT): what happened last, for the report of the worst
sub event { my ($self, $text) = @_; $self->{last_event} = $text; }

sub sample
{
    my ($self) = @_;
    my $o = ChaosCheck::try_psql($self->{node}, qq{
        SELECT extract(epoch FROM least(clock_timestamp() - min(j.lease_expires_at),
                                        clock_timestamp() - w.backend_start)) || '|' ||
               extract(epoch FROM clock_timestamp() - min(j.lease_expires_at))
          FROM jq.job j,
               (SELECT min(backend_start) AS backend_start FROM pg_stat_activity
                 WHERE backend_type = 'pgjq worker') w
         WHERE j.queue_id = $self->{qid} AND j.lease_expires_at < clock_timestamp()
           AND w.backend_start IS NOT NULL
         GROUP BY w.backend_start});
    return unless defined $o && $o =~ /^([\d.]+)\|([\d.]+)$/;
    my ($since_worker, $raw) = ($1, $2);
    $self->{max_overdue_raw} = $raw if $raw > $self->{max_overdue_raw};
    if ($since_worker > $self->{max_overdue})
    {
        $self->{max_overdue} = $since_worker;
        $self->{overdue_at} = sprintf('at %.1f s, after %s', time - $self->{t0},
                                      $self->{last_event});
    }
}

package ChaosCheck;

# --- the invariant checker ----------------------------------------------------

# check_invariants(node => NODE, logdir => DIR, qid => QID, lease => SECONDS,
#                  watch => LEASEWATCH, min_committed => N):
# after drain_and_stop, loads the clients' logs from DIR into NODE (schema
# chaos: table ev, views place, committed, rolled_back, unknown, reused,
# delivery) and checks every invariant on queue QID (tests).  Returns the
# numbers it counted (committed, rolled_back, unknown, unknown_exist,
# true_acks, double, d_rows, d_unseen).
sub check_invariants
{
    my %a = @_;
    my ($node, $logdir, $qid, $lease, $watch) = @a{qw(node logdir qid lease watch)};

    # --- load the clients' logs -------------------------------------------

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
        -- come again after a crash (its WAL was never flushed) or a failover
        -- (never sent): then the id is logged not committed under one server
        -- and committed under a later one
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

    my $q1 = sub { return $node->safe_psql('postgres', $_[0]); };

    # checks that count violations: 0 passes; else show a few
    my $none = sub
    {
        my ($name, $sql) = @_;
        local $Test::Builder::Level = $Test::Builder::Level + 1;
        my $n = $q1->("SELECT count(*) FROM ($sql) v");
        is($n, '0', $name)
          or diag("$name: $n violations, e.g.\n"
                  . $q1->("SELECT row_to_json(v) FROM ($sql LIMIT 10) v"));
    };

    # --- the invariants ---------------------------------------------------

    my %n;
    $n{committed} = $q1->('SELECT count(*) FROM chaos.committed');
    $n{rolled_back} = $q1->('SELECT count(*) FROM chaos.rolled_back');
    $n{unknown} = $q1->('SELECT count(*) FROM chaos.unknown');
    $n{unknown_exist} = $q1->('SELECT count(*) FROM chaos.unknown u WHERE EXISTS (SELECT FROM chaos.place p WHERE p.id = u.id)');
    ok($n{committed} > $a{min_committed}, "producers committed jobs ($n{committed})");

    $none->('no id is logged both committed and not committed by one server (client log sanity)', q{
        SELECT c.id FROM chaos.committed c
          JOIN (SELECT id, server FROM chaos.rolled_back UNION SELECT id, server FROM chaos.unknown) r
            ON r.id = c.id AND r.server >= c.server});
    note('ids given out again after a crash (their first transaction never committed): '
        . $q1->('SELECT count(DISTINCT id) FROM chaos.reused'));

    # invariant 4: every committed job is somewhere, exactly once
    $none->('no committed job is lost', q{
        SELECT c.id FROM chaos.committed c
         WHERE NOT EXISTS (SELECT FROM chaos.place p WHERE p.id = c.id)});
    $none->('no job is in two places or twice in one (jq.job, jq.job_result, jq.dead_letter)', q{
        SELECT id, string_agg(place, ',') FROM chaos.place GROUP BY id HAVING count(*) > 1});

    # invariant 1: a job exists iff its transaction committed
    $none->('a job whose COMMIT outcome the producer never learnt exists at most once', q{
        SELECT u.id, count(*) FROM chaos.unknown u JOIN chaos.place p USING (id)
         GROUP BY u.id HAVING count(*) > 1});
    $none->('no job of a rolled-back transaction (or savepoint) exists', q{
        SELECT r.id FROM chaos.rolled_back r JOIN chaos.place p USING (id)
         WHERE NOT EXISTS (SELECT FROM chaos.reused u WHERE u.id = r.id)});
    $none->('no job of a rolled-back transaction was ever delivered', q{
        SELECT DISTINCT r.id FROM chaos.rolled_back r JOIN chaos.ev e USING (id)
         WHERE e.role = 'worker' AND e.kind IN ('D', 'T')
           AND NOT EXISTS (SELECT FROM chaos.reused u WHERE u.id = r.id)
        UNION
        -- a reused id: delivered only once the server that reused it ran
        SELECT DISTINCT d.id FROM chaos.reused u JOIN chaos.delivery d USING (id)
         WHERE d.started < u.reused_server});
    $none->('every job in the tables was committed, or its COMMIT outcome is unknown (no phantoms)', q{
        SELECT p.id FROM chaos.place p
         WHERE NOT EXISTS (SELECT FROM chaos.committed c WHERE c.id = p.id)
           AND NOT EXISTS (SELECT FROM chaos.unknown u WHERE u.id = p.id)});
    $none->('every delivered job exists', q{
        SELECT DISTINCT e.id FROM chaos.ev e WHERE e.kind IN ('D')
           AND NOT EXISTS (SELECT FROM chaos.place p WHERE p.id = e.id)});

    # invariant 6 under faults: a resubmitted key returns the committed job
    $none->('a resubmitted idempotency key returns the job it committed', q{
        SELECT id, token FROM chaos.ev WHERE kind = 'K' AND id <> token});

    # no double completion
    $n{true_acks} = $q1->(q{SELECT count(*) FROM chaos.ev WHERE kind = 'A'});
    $n{double} = $q1->(q{SELECT count(*) FROM (SELECT id FROM chaos.ev WHERE kind = 'A'
                                               GROUP BY id HAVING count(*) > 1) d});
    is($n{double}, '0', 'no job was acked true twice (double completions: 0)')
      or diag($q1->(q{SELECT string_agg(format('%s by %s', id, actors), E'\n')
                        FROM (SELECT id, string_agg(actor || ':' || token, ' ') actors
                                FROM chaos.ev WHERE kind = 'A' GROUP BY id HAVING count(*) > 1
                               LIMIT 10) d}));
    $none->('every true ack is the completion on record (result names its job, worker and token)', q{
        SELECT a.id, a.token, a.actor, p.place, p.result FROM chaos.ev a
          LEFT JOIN chaos.place p ON p.id = a.id
         WHERE a.kind = 'A'
           AND (p.place IS DISTINCT FROM 'd' OR (p.result->>'job')::bigint <> a.id
                OR (p.result->>'token')::bigint <> a.token
                OR (p.result->>'worker')::int <> a.actor)});
    $none->('every succeeded job was acked true, or by an ack whose outcome the worker never learnt', q{
        SELECT p.id, p.result FROM chaos.place p
         WHERE p.place = 'd'
           AND ((p.result->>'job')::bigint IS DISTINCT FROM p.id
                OR NOT EXISTS (SELECT FROM chaos.ev e
                                WHERE e.id = p.id AND e.kind IN ('A', 'E', 'L')
                                  AND e.token = (p.result->>'token')::bigint
                                  AND e.actor = (p.result->>'worker')::int))});
    $n{d_rows} = $q1->(q{SELECT count(*) FROM chaos.place WHERE place = 'd'});
    $n{d_unseen} = $q1->(q{
        SELECT count(*) FROM chaos.place p WHERE p.place = 'd'
           AND NOT EXISTS (SELECT FROM chaos.ev e WHERE e.id = p.id AND e.kind = 'A')});
    is($n{d_rows} - $n{d_unseen}, $n{true_acks},
       "succeeded jobs = true acks + acks whose reply was lost ($n{d_rows} = $n{true_acks} + $n{d_unseen})");

    $none->('an ack that returned false did not complete the job (unless an earlier ack of that lease went unanswered)', q{
        SELECT s.id, s.token, s.actor FROM chaos.ev s JOIN chaos.place p ON p.id = s.id
         WHERE s.kind = 'S' AND p.place = 'd'
           AND (p.result->>'token')::bigint = s.token AND (p.result->>'worker')::int = s.actor
           AND NOT EXISTS (SELECT FROM chaos.ev e WHERE e.id = s.id AND e.token = s.token
                              AND e.kind IN ('E', 'L'))});

    # cancels
    $none->('no cancelled job was acked true', q{
        SELECT p.id FROM chaos.place p JOIN chaos.ev e ON e.id = p.id AND e.kind = 'A'
         WHERE p.place = 'c'});
    $none->('every job whose jq_cancel returned true ended cancelled', q{
        SELECT e.id, p.place FROM chaos.ev e LEFT JOIN chaos.place p USING (id)
         WHERE e.kind = 'X' AND e.extra = 't' AND p.place IS DISTINCT FROM 'c'});

    # invariants 2 and 3: one lease at a time, fencing
    $none->('every delivery has its own lease token and delivery count', q{
        SELECT id, n, count(*) FROM chaos.delivery GROUP BY id, n HAVING count(*) > 1});
    # (it failed now and then while jq_dequeue dated a lease from before its
    # lock waits: see the lock-wait test at the end of 020_chaos.pl; and
    # while a lease was dated from a clock read before the scan's snapshot,
    # which a reclaim could commit in between: each lease reads it once its
    # row is taken, lease_row in src/hotpath.c)
    $none->('no job is delivered again while an earlier lease on it runs (unless failed early)', q{
        SELECT d1.id, d1.n AS n1, d1.actor AS actor1, d1.expires AS expires1, d2.n AS n2,
               d2.actor AS actor2, d2.started AS started2, d2.left_ms AS left2
          FROM chaos.delivery d1 JOIN chaos.delivery d2 ON d2.id = d1.id AND d2.n > d1.n
         WHERE d2.started IS NOT NULL AND d1.expires IS NOT NULL
           AND d2.started < d1.expires
           AND NOT EXISTS (SELECT FROM chaos.ev f WHERE f.id = d1.id AND f.token = d1.token
                              AND (f.kind = 'G' OR (f.kind = 'F' AND f.extra <> 'null')))});
    $none->('no job is delivered again after the ack that completed it', q{
        SELECT p.id FROM chaos.place p JOIN chaos.delivery d ON d.id = p.id
         WHERE p.place = 'd' AND d.n > ((p.result->>'token')::bigint >> 32)});
    $none->('attempts equal the delivery count of the last lease token', q{
        SELECT id, place, attempts FROM chaos.place
         WHERE (place = 'd' AND attempts <> ((result->>'token')::bigint >> 32))
            OR (place = 'x' AND attempts <> (lease_token >> 32))});

    # after the drain: no lease left; counters equal the truth
    is($q1->(qq{SELECT count(*) FROM jq.job WHERE queue_id = $qid AND state = 'l'}), '0',
       'no leased job is left (every lease was acked, failed or reclaimed)');
    # naptime 0.2 s, plus a counter rebuild after a start (it waits up to 2 s
    # for locks), the locker's locks (0.4 s) and a busy machine
    ok($watch->{max_overdue} < 6,
       sprintf('expired leases are reclaimed promptly once the background worker runs '
               . '(longest seen %.1f s past expiry or the worker\'s start, %s; %.1f s past expiry alone)',
               $watch->{max_overdue}, $watch->{overdue_at}, $watch->{max_overdue_raw}));

    my $queue = $q1->(qq{SELECT name FROM jq.queue WHERE queue_id = $qid});
    PgjqTest::wait_for_counters($node, 'postgres', $queue)
      or die 'counters never became valid';
    $none->('counters (jq.counters) equal the truth counted from the tables', qq{
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
    $none->('jq.queue_stats shows the same depth', qq{
        SELECT s.* FROM jq.queue_stats s,
               (SELECT count(*) FILTER (WHERE place = 'r') AS r, count(*) FILTER (WHERE place = 's') AS s,
                       count(*) FILTER (WHERE place = 'l') AS l, count(*) FILTER (WHERE place = 'x') AS x
                  FROM chaos.place) t
         WHERE s.queue = '$queue'
           AND (s.ready, s.scheduled, s.in_flight, s.dead) IS DISTINCT FROM (t.r, t.s, t.l, t.x)});
    return \%n;
}

1;
