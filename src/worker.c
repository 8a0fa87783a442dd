/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The pgjq background worker: lease reclaim, promotion of due scheduled
 *	  jobs, and coalesced LISTEN/NOTIFY wakeups.
 *
 * One worker per database named in pgjq.database, registered statically
 * while pgjq is preloaded.  Each pass runs in short transactions of its own
 * (so the worker never holds back the xmin horizon of the job table):
 *   1. reclaim expired leases, in batches, with SKIP LOCKED;
 *   2. promote scheduled jobs whose run_at has come, per queue;
 *   3. NOTIFY jq_<queue> for queues that got ready jobs, at most once per
 *      queue per pgjq.notify_interval.
 * Then it sleeps on its latch until the next deadline: pgjq.naptime, the
 * next lease expiry, the next scheduled job, or a coalesced NOTIFY that is
 * due.  Committing producers set the latch (shmem.c).
 *
 * An ERROR in a pass ends the process; the postmaster logs it and starts
 * the worker again after PGJQ_RESTART_SECONDS.  The worker starts only
 * once recovery has finished, so it does nothing on a standby and starts
 * after a promotion.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void pgjq_worker_main(Datum main_arg);

/* GUCs (defined in pgjq.c) */
int			pgjq_naptime = 1000;
int			pgjq_notify_interval = 10;
int			pgjq_reclaim_batch = 1000;
int			pgjq_stats_interval = 10;
int			pgjq_history_retention = 7 * 24 * 3600;
int			pgjq_purge_batch = 1000;

/* per queue: when the worker last notified it, and whether one is owed */
typedef struct NotifyState
{
	int32		queue_id;		/* hash key */
	TimestampTz last_notify;
	bool		owed;
} NotifyState;

static HTAB *notify_state = NULL;

/* reset every loop; the steps return to it after their transactions */
static MemoryContext loop_context = NULL;

/* when reclaim and promotion run next, and the periodic work */
static TimestampTz next_maintenance = 0;
static TimestampTz next_periodic = 0;

/* the pass's statements; results are read by position */
#define SQL_RECLAIM \
	"SELECT j.queue_id, f.state" \
	"  FROM jq.fail_leased(" \
	"         ARRAY(SELECT id FROM jq.job" \
	"                WHERE lease_expires_at < pg_catalog.clock_timestamp()" \
	"                ORDER BY lease_expires_at" \
	"                LIMIT $1" \
	"                  FOR UPDATE SKIP LOCKED)," \
	"         'lease expired', false, pg_catalog.clock_timestamp()," \
	"         pg_catalog.clock_timestamp()) f" \
	"  JOIN jq.job j ON j.id = f.job_id"

#define SQL_PROMOTE \
	"WITH promoted AS (" \
	"    UPDATE jq.job j SET state = 'r'" \
	"     WHERE j.id IN (SELECT d.id FROM jq.queue q CROSS JOIN LATERAL" \
	"                      (SELECT id FROM jq.job" \
	"                        WHERE queue_id = q.queue_id AND state = 's'" \
	"                          AND run_at <= pg_catalog.clock_timestamp()" \
	"                        ORDER BY run_at LIMIT $1" \
	"                          FOR UPDATE SKIP LOCKED) d)" \
	"    RETURNING j.queue_id" \
	")" \
	" SELECT DISTINCT queue_id FROM promoted"

/* -> the earliest of the next lease expiry and the next scheduled run_at */
#define SQL_NEXT_DEADLINE \
	"SELECT LEAST(" \
	"  (SELECT min(lease_expires_at) FROM jq.job WHERE lease_expires_at IS NOT NULL)," \
	"  (SELECT min(x.run_at) FROM jq.queue q CROSS JOIN LATERAL" \
	"     (SELECT run_at FROM jq.job WHERE queue_id = q.queue_id AND state = 's'" \
	"       ORDER BY run_at LIMIT 1) x))"

#define SQL_NOTIFY \
	"SELECT pg_catalog.pg_notify('jq_' || name, '') FROM jq.queue" \
	" WHERE queue_id = ANY ($1)"

/*
 * owe_notify records that the queue's listeners must hear from us.
 */
static void
owe_notify(int32 queue_id)
{
	bool		found;
	NotifyState *ns = hash_search(notify_state, &queue_id, HASH_ENTER, &found);

	if (!found)
		ns->last_notify = 0;
	ns->owed = true;
}

/*
 * begin_step and end_step bracket one short transaction of a pass, the
 * way core's worker_spi does.  begin_step returns false, having closed the
 * transaction, when pgjq is not installed in this database (yet, or any
 * more): the worker then just waits.
 */
static bool
begin_step(const char *what)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, what);

	if (!OidIsValid(get_extension_oid("pgjq", true)))
	{
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
		MemoryContextSwitchTo(loop_context);
		return false;
	}
	return true;
}

static void
end_step(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
#if PG_VERSION_NUM < 150000
	ProcessCompletedNotifies();
#endif
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	/* CommitTransactionCommand leaves us in TopMemoryContext */
	MemoryContextSwitchTo(loop_context);
}

/*
 * reclaim_expired fails the attempts of expired leases (jq.fail_leased
 * does the transition) until a batch comes back short; requeued jobs
 * wake their queues.
 */
static void
reclaim_expired(void)
{
	uint64		done;

	do
	{
		Datum		values[1];
		uint64		requeued = 0;

		if (!begin_step("pgjq: reclaim expired leases"))
			return;
		values[0] = Int32GetDatum(pgjq_reclaim_batch);
		if (SPI_execute_with_args(SQL_RECLAIM, 1, (Oid[]) {INT4OID}, values, NULL,
								  false, 0) != SPI_OK_SELECT)
			elog(ERROR, "pgjq: lease reclaim failed");
		done = SPI_processed;
		for (uint64 i = 0; i < done; i++)
		{
			bool		isnull;
			char	   *state = SPI_getvalue(SPI_tuptable->vals[i],
											 SPI_tuptable->tupdesc, 2);

			if (state != NULL && strcmp(state, "ready") == 0)
			{
				owe_notify(DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc,
													   1, &isnull)));
				requeued++;
			}
		}
		end_step();
		if (done > 0)
			elog(DEBUG1, "pgjq: reclaimed " UINT64_FORMAT " expired leases, "
				 UINT64_FORMAT " back to ready", done, requeued);
		CHECK_FOR_INTERRUPTS();
	} while (done >= (uint64) pgjq_reclaim_batch);
}

/*
 * promote_due makes scheduled jobs whose time has come ready, and wakes
 * their queues.
 */
static void
promote_due(void)
{
	Datum		values[1];

	if (!begin_step("pgjq: promote due jobs"))
		return;
	values[0] = Int32GetDatum(pgjq_reclaim_batch);
	if (SPI_execute_with_args(SQL_PROMOTE, 1, (Oid[]) {INT4OID}, values, NULL,
							  false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgjq: promotion of due jobs failed");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		owe_notify(DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
											   SPI_tuptable->tupdesc, 1, &isnull)));
	}
	end_step();
}

/*
 * send_notifies sends the owed NOTIFYs that the coalescing window allows,
 * in one transaction, and returns when the next owed one falls due (0 when
 * none is owed).
 */
static TimestampTz
send_notifies(void)
{
	HASH_SEQ_STATUS status;
	NotifyState *ns;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next_due = 0;
	Datum	   *ids;
	int			nids = 0;
	int			max = hash_get_num_entries(notify_state);

	if (max == 0)
		return 0;
	ids = palloc(sizeof(Datum) * max);
	hash_seq_init(&status, notify_state);
	while ((ns = hash_seq_search(&status)) != NULL)
	{
		TimestampTz due;

		if (!ns->owed)
			continue;
		due = TimestampTzPlusMilliseconds(ns->last_notify, pgjq_notify_interval);
		if (due <= now)
		{
			ids[nids++] = Int32GetDatum(ns->queue_id);
			ns->owed = false;
			ns->last_notify = now;
			pgjq_worker_clear_wakeup(ns->queue_id);
		}
		else if (next_due == 0 || due < next_due)
			next_due = due;
	}

	if (nids > 0 && begin_step("pgjq: notify"))
	{
		Datum		values[1];

		values[0] = PointerGetDatum(construct_array(ids, nids, INT4OID, sizeof(int32),
													true, TYPALIGN_INT));
		if (SPI_execute_with_args(SQL_NOTIFY, 1, (Oid[]) {INT4ARRAYOID}, values,
								  NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "pgjq: notify failed");
		end_step();
	}
	pfree(ids);
	return next_due;
}

/*
 * next_deadline returns the earliest lease expiry or scheduled run_at, or
 * 0 when there is neither.
 */
static TimestampTz
next_deadline(void)
{
	TimestampTz result = 0;
	bool		isnull;
	Datum		d;

	if (!begin_step("pgjq: next deadline"))
		return 0;
	if (SPI_execute(SQL_NEXT_DEADLINE, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pgjq: deadline query failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		result = DatumGetTimestampTz(d);
	end_step();
	return result;
}

/*
 * rebuild_counters recounts this database's counters from the tables when
 * they are not valid: after a start, a crash, a full counter hash, or a
 * prepared transaction (then only once none is left, as its changes are
 * not in the counters until it commits).
 */
static void
rebuild_counters(void)
{
	bool		stale;
	bool		isnull;

	if (!pgjq_stats_need_rebuild(&stale))
		return;
	if (!begin_step("pgjq: rebuild counters"))
		return;
	if (stale)
	{
		if (SPI_execute("SELECT count(*) FROM pg_catalog.pg_prepared_xacts"
						" WHERE database = pg_catalog.current_database()",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "pgjq: reading pg_prepared_xacts failed");
		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										SPI_tuptable->tupdesc, 1, &isnull)) > 0)
		{
			end_step();
			return;
		}
	}
	if (SPI_execute("SELECT jq.lock_for_rebuild(2000)", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgjq: locking for the counter rebuild failed");
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								   1, &isnull)))
	{
		pgjq_stats_rebuild();
		elog(DEBUG1, "pgjq: counters rebuilt");
	}
	end_step();
}

/*
 * periodic_work samples the counters into jq.stats_history, raises and
 * clears alerts, and purges expired results, dead letters and keys, in
 * batches of pgjq.purge_batch_size.
 */
static void
periodic_work(void)
{
	Datum		values[1];
	bool		isnull;
	int			purged;
	int			rounds = 0;

	if (!begin_step("pgjq: sample statistics and check alerts"))
		return;
	values[0] = Int32GetDatum(pgjq_history_retention);
	if (SPI_execute_with_args("SELECT jq.sample_stats(pg_catalog.make_interval(secs => $1))",
							  1, (Oid[]) {INT4OID}, values, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_execute("SELECT jq.check_alerts()", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pgjq: sampling statistics failed");
	end_step();

	do
	{
		if (!begin_step("pgjq: purge expired results"))
			return;
		values[0] = Int32GetDatum(pgjq_purge_batch);
		if (SPI_execute_with_args("SELECT jq.purge_expired($1)", 1, (Oid[]) {INT4OID},
								  values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "pgjq: purge failed");
		purged = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
		end_step();
		CHECK_FOR_INTERRUPTS();
	} while (purged > 0 && ++rounds < 100);
}

/*
 * take_wakeups moves the queues that committing producers marked into
 * the worker's owed set.
 */
static void
take_wakeups(void)
{
	int32	   *queue_ids;
	int			n = pgjq_worker_take_wakeups(&queue_ids);

	if (n < 0)
	{
		/* the shared hash overflowed: wake every queue */
		if (begin_step("pgjq: list queues"))
		{
			if (SPI_execute("SELECT queue_id FROM jq.queue", true, 0) != SPI_OK_SELECT)
				elog(ERROR, "pgjq: listing queues failed");
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				bool		isnull;

				owe_notify(DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc,
													   1, &isnull)));
			}
			end_step();
		}
	}
	for (int i = 0; i < n; i++)
		owe_notify(queue_ids[i]);
	pfree(queue_ids);
}

static long
ms_until(TimestampTz t, TimestampTz now)
{
	long		secs;
	int			usecs;

	if (t <= now)
		return 0;
	TimestampDifference(now, t, &secs, &usecs);
	return secs * 1000 + usecs / 1000 + 1;
}

/*
 * pgjq_worker_main is the entry point of the background worker; bgw_extra
 * holds the name of the database to serve.
 */
void
pgjq_worker_main(Datum main_arg)
{
	char		dbname[BGW_EXTRALEN];
	HASHCTL		info;

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(dbname, NULL, 0);
	pgstat_report_appname("pgjq worker");
	/* the worker runs as superuser: resolve names in pg_catalog only */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);

	if (!pgjq_worker_attach(MyDatabaseId))
	{
		ereport(LOG,
				(errmsg("pgjq worker for database \"%s\" is already running, exiting",
						dbname)));
		proc_exit(0);			/* 0: the postmaster does not restart us */
	}
	ereport(LOG,
			(errmsg("pgjq worker started for database \"%s\"", dbname)));

	info.keysize = sizeof(int32);
	info.entrysize = sizeof(NotifyState);
	notify_state = hash_create("pgjq notify state", 64, &info,
							   HASH_ELEM | HASH_BLOBS);
	loop_context = AllocSetContextCreate(TopMemoryContext, "pgjq worker loop",
										 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz now;
		TimestampTz wake_at;
		TimestampTz notify_due;
		long		timeout;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			next_maintenance = 0;	/* intervals may have changed */
		}

		/*
		 * A latch set by committing producers costs only this: collect the
		 * marked queues and send what the coalescing window allows.  The
		 * table work waits for its own deadline.
		 */
		take_wakeups();
		now = GetCurrentTimestamp();
		if (now >= next_maintenance)
		{
			TimestampTz due;

			/*
			 * Counters that are not valid (after a start, a crash, CREATE
			 * EXTENSION) are rebuilt at the first pass, not at the next
			 * statistics tick; the rebuild gives up quickly when writers
			 * hold the tables, and the next pass tries again.
			 */
			rebuild_counters();
			reclaim_expired();
			promote_due();
			next_maintenance = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   pgjq_naptime);
			due = next_deadline();

			/*
			 * A deadline already past means rows the pass had to skip
			 * (locked by a worker acking or extending, or by a prepared
			 * transaction) or a lease that expired a moment ago: look again
			 * soon, but never spin.
			 */
			if (due != 0 && due <= GetCurrentTimestamp())
				due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												  Min(pgjq_naptime, 100));
			if (due != 0 && due < next_maintenance)
				next_maintenance = due;
		}
		notify_due = send_notifies();
		if (GetCurrentTimestamp() >= next_periodic)
		{
			periodic_work();
			next_periodic = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														pgjq_stats_interval * 1000);
		}

		MemoryContextSwitchTo(loop_context);
		wake_at = next_maintenance;
		if (notify_due != 0 && notify_due < wake_at)
			wake_at = notify_due;
		if (next_periodic < wake_at)
			wake_at = next_periodic;
		timeout = ms_until(wake_at, GetCurrentTimestamp());

		if (timeout > 0)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * pgjq_register_workers registers one worker per database listed in
 * pgjq.database; called from _PG_init during preload.
 */
void
pgjq_register_workers(const char *databases)
{
	char	   *list = pstrdup(databases);
	char	   *tok;
	char	   *save;
	int			n = 0;

	for (tok = strtok_r(list, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
	{
		BackgroundWorker worker;

		while (*tok == ' ' || *tok == '\t')
			tok++;
		for (char *end = tok + strlen(tok) - 1; end >= tok && (*end == ' ' || *end == '\t'); end--)
			*end = '\0';
		if (*tok == '\0')
			continue;
		if (n == PGJQ_MAX_DATABASES)
		{
			ereport(WARNING,
					(errmsg("pgjq serves at most %d databases; ignoring \"%s\" and the rest of pgjq.database",
							PGJQ_MAX_DATABASES, tok)));
			break;
		}
		if (strlen(tok) >= BGW_EXTRALEN)
		{
			ereport(WARNING,
					(errmsg("database name \"%s\" in pgjq.database is too long, ignoring it", tok)));
			continue;
		}

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = PGJQ_RESTART_SECONDS;
		strlcpy(worker.bgw_library_name, "pgjq", BGW_MAXLEN);
		strlcpy(worker.bgw_function_name, "pgjq_worker_main", BGW_MAXLEN);
		snprintf(worker.bgw_name, BGW_MAXLEN, "pgjq worker for database %s", tok);
		strlcpy(worker.bgw_type, "pgjq worker", BGW_MAXLEN);
		strlcpy(worker.bgw_extra, tok, BGW_EXTRALEN);
		RegisterBackgroundWorker(&worker);
		n++;
	}
	pfree(list);
}
