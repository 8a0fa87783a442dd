/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  Queues as the hot path sees them: the queue-name rule, each
 *	  backend's cache of queue settings with its invalidation trigger, and
 *	  the locks that keep jobs and queues consistent.
 *
 * The queue cache: each backend keeps the settings of the queues it used,
 * by name, so that the hot path does not read jq.queue on every call (an
 * SPI execution that was 7% of an enqueue's CPU).  Every change of
 * jq.queue fires jq.queue_changed(), a statement trigger that sends a
 * relcache invalidation of jq.queue; at commit every backend receives it
 * and its callback below empties the cache.  Lookups accept pending
 * invalidations first, so jq_alter_queue takes effect in every backend at
 * its next call, even inside an open transaction.  A rolled back change is
 * undone in the changing backend's cache too, as core replays a
 * transaction's own invalidations locally when it aborts.
 *
 * Lock order: every API function that writes jq.job, jq.job_result or
 * jq.dead_letter takes ROW EXCLUSIVE on jq.job first
 * (pgjq_lock_job_table), so that it never waits for jq.job while holding
 * one of the others: the counter rebuild takes SHARE locks on the three
 * tables in that order, and a writer that had jq.job_result already (an
 * ack's statement locks its INSERT target first) and then waited for
 * jq.job would deadlock with it (isolation spec rebuild_lock_order).
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/queue.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "queue.h"
#include "statements.h"
#include "usage.h"

PG_FUNCTION_INFO_V1(pgjq_check_queue_name_sql);
PG_FUNCTION_INFO_V1(pgjq_queue_changed);
PG_FUNCTION_INFO_V1(pgjq_lock_queue);

typedef struct QueueCacheEntry
{
	char		name[PGJQ_LIMIT_QUEUE_NAME_MAXLEN + 1];	/* hash key */
	PgjqQueue	queue;
} QueueCacheEntry;

static HTAB *queue_cache = NULL;
static Oid	queue_relid = InvalidOid;	/* jq.queue, found on first use */
static uint64 queue_cache_generation = 0;	/* bumped by every reset */

/*
 * What the installed schema offers, known when jq.queue is first looked
 * up: the library serves the schemas of earlier versions until ALTER
 * EXTENSION pgjq UPDATE has run.  A 0.1.0 schema has neither the
 * invalidating trigger nor jq.lock_queue: then nothing is cached and
 * nothing is locked, as in 0.1.0.  Schemas before 0.3.0 lack
 * jq.promote_due: then jq_dequeue promotes nothing (the worker waits for
 * the update too).  Every update changes jq.queue, whose invalidation
 * makes these be looked up again.
 */
static bool schema_caches = false;
static bool schema_promotes = false;
static bool schema_bounds = false;
static bool schema_keys = false;

/* jq.job_scheduled_idx, for jq_dequeue's probe (pgjq_scheduled_index) */
static Oid	scheduled_idx_oid = InvalidOid;

/* jq.job_result, where the hot path writes finished jobs (pgjq_result_table) */
static Oid	result_relid = InvalidOid;
/* jq.usage_pending, where acks write usage reports (pgjq_usage_table) */
static Oid	usage_relid = InvalidOid;

/* jq.queue's unique index on name, which read_queue probes */
static Oid	name_idx_oid = InvalidOid;

/*
 * pgjq_check_queue_name raises 42602 unless name is a valid queue name:
 * a lowercase letter, then lowercase letters, digits or underscores, at
 * most PGJQ_LIMIT_QUEUE_NAME_MAXLEN bytes.  The rule keeps "jq_" || name a
 * valid unquoted identifier and a NOTIFY channel name that fits in
 * NAMEDATALEN.  The SQL side checks names through jq.check_queue_name, so
 * this is the only place the rule is written.
 */
void
pgjq_check_queue_name(const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len >= 1 && name[0] >= 'a' && name[0] <= 'z';

	/* no need to echo a name of a thousand characters back */
	if (len > PGJQ_LIMIT_QUEUE_NAME_MAXLEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("queue name is too long"),
				 errdetail("A queue name has at most %d characters; this one has %zu.",
						   PGJQ_LIMIT_QUEUE_NAME_MAXLEN, len)));

	for (size_t i = 1; ok && i < len; i++)
	{
		char		c = name[i];

		ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
	}

	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid queue name \"%s\"", name),
				 errdetail("A queue name starts with a lowercase letter and has only lowercase letters, digits and underscores, at most %d characters.",
						   PGJQ_LIMIT_QUEUE_NAME_MAXLEN)));
}

/* jq.check_queue_name(name): the rule above, for the SQL functions */
Datum
pgjq_check_queue_name_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue name must not be null")));
	pgjq_check_queue_name(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* attnum_of finds a column of jq.queue by name */
static AttrNumber
attnum_of(TupleDesc desc, const char *attname)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), attname) == 0)
			return att->attnum;
	}
	elog(ERROR, "pgjq: jq.queue has no column \"%s\"", attname);
	return InvalidAttrNumber;	/* keep the compiler quiet */
}

static bool
function_exists(const char *name, int nargs, Oid *argtypes)
{
	return OidIsValid(LookupFuncName(list_make2(makeString(PGJQ_SCHEMA),
												makeString(pstrdup(name))),
									 nargs, argtypes, true));
}

static void
queue_cache_reset(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == scheduled_idx_oid)
		scheduled_idx_oid = InvalidOid;
	if (relid == InvalidOid || relid == result_relid)
		result_relid = InvalidOid;
	if (relid == InvalidOid || relid == usage_relid)
		usage_relid = InvalidOid;
	if (relid == InvalidOid || relid == name_idx_oid || relid == queue_relid)
		name_idx_oid = InvalidOid;
	if (relid != InvalidOid && relid != queue_relid)
		return;
	if (queue_cache != NULL)
	{
		hash_destroy(queue_cache);
		queue_cache = NULL;
	}
	/* jq.queue itself may be gone: DROP EXTENSION invalidates it too */
	queue_relid = InvalidOid;
	queue_cache_generation++;
}

static void
queue_cache_init(void)
{
	static bool callback_registered = false;
	HASHCTL		info;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(queue_cache_reset, (Datum) 0);
		callback_registered = true;
	}
	if (queue_relid == InvalidOid)
	{
		Oid			promote_args[2] = {INT4OID, INT4OID};

		queue_relid = get_relname_relid("queue",
										get_namespace_oid(PGJQ_SCHEMA, false));
		schema_caches = function_exists("queue_changed", 0, NULL);
		schema_promotes = function_exists("promote_due", 2, promote_args);
		schema_bounds = function_exists("scan_bounds", 0, NULL);
		schema_keys = function_exists("key_counters", 0, NULL);
	}
	if (queue_cache == NULL)
	{
		info.keysize = PGJQ_LIMIT_QUEUE_NAME_MAXLEN + 1;
		info.entrysize = sizeof(QueueCacheEntry);
		info.hcxt = TopMemoryContext;
		queue_cache = hash_create("pgjq queue cache", 16, &info,
								  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
}

/*
 * name_index returns the OID of jq.queue's unique index on name, read
 * from the syscache: opening every index of the table to look at it
 * would build relcache entries a new session does not otherwise need.
 */
static Oid
name_index(Relation rel, AttrNumber name_att)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			found = InvalidOid;

	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index index;

		if (!HeapTupleIsValid(tup))
			continue;
		index = (Form_pg_index) GETSTRUCT(tup);
		if (index->indisunique && index->indnkeyatts == 1 &&
			index->indkey.values[0] == name_att)
			found = index->indexrelid;
		ReleaseSysCache(tup);
		if (OidIsValid(found))
			break;
	}
	list_free(indexes);
	if (!OidIsValid(found))
		elog(ERROR, "pgjq: jq.queue has no unique index on its name");
	return found;
}

/*
 * read_queue reads a queue's settings from jq.queue with the latest
 * snapshot, not the transaction's: settings, and whether the queue still
 * exists, are what was last committed, also in a repeatable read
 * transaction (a queue dropped after it began is gone).  It probes the
 * unique index on the name through the index access method: a prepared
 * statement here was most of a new session's first dequeue (its parse
 * analysis and planning, every catalog lookup into empty caches).
 */
static bool
read_queue(const char *name, PgjqQueue *queue)
{
	Relation	rel = table_open(queue_relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	name_att = attnum_of(desc, "name");
	Relation	index;
	ScanKeyData key;
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		found;

	if (name_idx_oid == InvalidOid)
		name_idx_oid = name_index(rel, name_att);
	index = index_open(name_idx_oid, AccessShareLock);

	/* compared as the index orders names: by its collation */
	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_TEXTEQ,
						   CStringGetTextDatum(name));
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	slot = table_slot_create(rel, NULL);
	found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (found)
	{
		bool		isnull;

		queue->queue_id = DatumGetInt32(slot_getattr(slot, attnum_of(desc, "queue_id"),
													 &isnull));
		queue->lease_seconds = DatumGetInt32(slot_getattr(slot,
														  attnum_of(desc, "lease_seconds"),
														  &isnull));
		queue->max_payload_bytes = DatumGetInt32(slot_getattr(slot,
															  attnum_of(desc, "max_payload_bytes"),
															  &isnull));
		strlcpy(queue->name, name, sizeof(queue->name));
		queue->max_in_flight = 0;
		queue->key_max_in_flight = 0;
		queue->key_max_queued = 0;
		queue->fair = false;
		queue->key_ordered = false;
		queue->rate_requests = 0;
		queue->rate_cost = 0;
		queue->rate_period = USECS_PER_MINUTE;
		if (schema_keys)
		{
			Datum		d;

			d = slot_getattr(slot, attnum_of(desc, "max_in_flight"), &isnull);
			queue->max_in_flight = isnull ? 0 : DatumGetInt32(d);
			d = slot_getattr(slot, attnum_of(desc, "key_max_in_flight"), &isnull);
			queue->key_max_in_flight = isnull ? 0 : DatumGetInt32(d);
			d = slot_getattr(slot, attnum_of(desc, "key_max_queued"), &isnull);
			queue->key_max_queued = isnull ? 0 : DatumGetInt64(d);
			d = slot_getattr(slot, attnum_of(desc, "fair"), &isnull);
			queue->fair = !isnull && DatumGetBool(d);
			d = slot_getattr(slot, attnum_of(desc, "key_ordered"), &isnull);
			queue->key_ordered = !isnull && DatumGetBool(d);
			d = slot_getattr(slot, attnum_of(desc, "rate_requests"), &isnull);
			queue->rate_requests = isnull ? 0 : DatumGetInt32(d);
			d = slot_getattr(slot, attnum_of(desc, "rate_cost"), &isnull);
			queue->rate_cost = isnull ? 0 :
				pgjq_cost_double(d);
			d = slot_getattr(slot, attnum_of(desc, "rate_period"), &isnull);
			if (!isnull)
				queue->rate_period = pgjq_interval_usecs(DatumGetIntervalP(d));
		}
	}
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	UnregisterSnapshot(snapshot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * pgjq_lookup_queue fills *queue with the settings of the named queue, or
 * raises 42704 with a hint to create it.
 *
 * With for_insert, the caller is about to add jobs to the queue: it also
 * takes the queue's lock in share mode until the end of the transaction.
 * jq_drop_queue takes it in exclusive mode, so a queue cannot be dropped
 * between the lookup and the commit of the jobs (they would be orphans
 * that no worker ever sees); an enqueue that waited for a drop finds the
 * queue gone.  The lock is an object lock on (jq.queue, queue_id), shown
 * in pg_locks with classid = 'jq.queue'::regclass.
 */
void
pgjq_lookup_queue(const char *name, PgjqQueue *queue, bool for_insert)
{
	pgjq_check_queue_name(name);

	/* see queue changes committed since this backend last looked */
	AcceptInvalidationMessages();

	for (;;)
	{
		QueueCacheEntry *entry;
		bool		found;
		uint64		generation;

		queue_cache_init();
		entry = hash_search(queue_cache, name, HASH_FIND, &found);
		if (found)
			*queue = entry->queue;
		else
		{
			if (!read_queue(name, queue))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("queue \"%s\" does not exist", name),
						 errhint("Create it with jq.jq_create_queue('%s').", name)));
			/* read_queue may have processed invalidations: init again */
			queue_cache_init();
			if (schema_caches)
			{
				entry = hash_search(queue_cache, name, HASH_ENTER, &found);
				entry->queue = *queue;
			}
		}

		if (!for_insert || !schema_caches)
			return;

		/*
		 * Locking accepts invalidations; when the cache was reset meanwhile
		 * (the queue was changed or dropped while we waited), look again.
		 */
		generation = queue_cache_generation;
		LockDatabaseObject(queue_relid, queue->queue_id, 0, AccessShareLock);
		if (generation == queue_cache_generation)
			return;
	}
}

/*
 * pgjq_schema_promotes tells whether the installed schema has
 * jq.promote_due (0.3.0 and later).  Valid after pgjq_lookup_queue.
 */
bool
pgjq_schema_promotes(void)
{
	queue_cache_init();
	return schema_promotes;
}

/*
 * pgjq_schema_bounds tells whether the installed schema's count trigger
 * notes every change that can make a job ready below a dequeue bound
 * (0.4.0 and later; src/bounds.c).
 */
bool
pgjq_schema_bounds(void)
{
	queue_cache_init();
	return schema_bounds;
}

/*
 * pgjq_schema_keys tells whether the installed schema has job keys and
 * flow control (0.4.0 and later; src/keys.c).
 */
bool
pgjq_schema_keys(void)
{
	queue_cache_init();
	return schema_keys;
}

/*
 * pgjq_lock_job_table takes ROW EXCLUSIVE on jq.job: see the lock order
 * in the header comment.
 */
Oid
pgjq_lock_job_table(void)
{
	return RangeVarGetRelid(makeRangeVar(PGJQ_SCHEMA, "job", -1), RowExclusiveLock, false);
}

/*
 * pgjq_scheduled_index returns the OID of jq.job_scheduled_idx, looked up
 * once and forgotten when the relcache drops the index.  The caller holds
 * a lock on jq.job, so the index cannot go away meanwhile.
 */
Oid
pgjq_scheduled_index(void)
{
	queue_cache_init();			/* registers the invalidation callback */
	if (scheduled_idx_oid == InvalidOid)
		scheduled_idx_oid = get_relname_relid("job_scheduled_idx",
											  get_namespace_oid(PGJQ_SCHEMA, false));
	if (scheduled_idx_oid == InvalidOid)
		elog(ERROR, "pgjq: index jq.job_scheduled_idx not found");
	return scheduled_idx_oid;
}

/*
 * pgjq_result_table locks jq.job_result for a writer (ROW EXCLUSIVE) and
 * returns its OID, looked up once.  Call it after pgjq_lock_job_table: see
 * the lock order in the header comment.
 */
Oid
pgjq_result_table(void)
{
	Oid			relid;

	queue_cache_init();
	if (result_relid == InvalidOid)
		result_relid = get_relname_relid("job_result",
										 get_namespace_oid(PGJQ_SCHEMA, false));
	relid = result_relid;
	if (relid == InvalidOid)
		elog(ERROR, "pgjq: table jq.job_result not found");

	/*
	 * Taking the lock accepts invalidations, and one for the table (a
	 * REINDEX of one of its indexes, say) empties result_relid: return the
	 * OID looked up, which the lock now keeps valid.
	 */
	LockRelationOid(relid, RowExclusiveLock);
	return relid;
}

/*
 * pgjq_usage_table locks jq.usage_pending for a writer (ROW EXCLUSIVE),
 * after jq.job_result, and returns its OID, as pgjq_result_table does.
 */
Oid
pgjq_usage_table(void)
{
	Oid			relid;

	queue_cache_init();
	if (usage_relid == InvalidOid)
		usage_relid = get_relname_relid("usage_pending",
										get_namespace_oid(PGJQ_SCHEMA, false));
	relid = usage_relid;
	if (relid == InvalidOid)
		elog(ERROR, "pgjq: table jq.usage_pending not found");
	LockRelationOid(relid, RowExclusiveLock);
	return relid;
}

/*
 * jq.queue_changed() is an AFTER ... FOR EACH STATEMENT trigger on
 * jq.queue: it makes every backend drop its queue cache when the change
 * commits (and this backend at once, for the rest of its transaction).
 */
Datum
pgjq_queue_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		elog(ERROR, "pgjq: queue_changed must be an AFTER STATEMENT trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * jq.lock_queue(queue_id) takes the queue's lock in exclusive mode until
 * the end of the transaction: it waits for every transaction that is
 * adding jobs to the queue, and keeps new ones out (see
 * pgjq_lookup_queue).  jq_drop_queue calls it.
 */
Datum
pgjq_lock_queue(PG_FUNCTION_ARGS)
{
	queue_cache_init();
	LockDatabaseObject(queue_relid, PG_GETARG_INT32(0), 0, AccessExclusiveLock);
	PG_RETURN_VOID();
}
