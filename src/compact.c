/*-------------------------------------------------------------------------
 *
 * compact.c
 *	  jq.compact_result_heap(max_rows): gives the space of jq.job_result
 *	  back to the file system after a burst or a held snapshot bloated it.
 *
 * VACUUM frees the space of dead rows for reuse, and returns it to the
 * file system only when the pages at the end of the table are empty.  The
 * results table rarely gets there on its own: its rows are purged after
 * their retention while acks keep inserting wherever the free space map
 * points, so after a long snapshot held back vacuum (the table doubled in
 * the bloat soak) live rows stay spread over the whole file.  This moves
 * the live rows of the tail pages into free space nearer the start, the
 * way pgcompacttable does it by hand: the tail pages are first marked full
 * in the free space map, so that neither the moves nor concurrent acks put
 * rows back there, then each row is deleted and inserted again, unchanged.
 * The next vacuum finds the tail empty and truncates it.  jq.compact
 * (SQL) decides when, and the worker calls that.
 *
 * A move is not a new result: the counters are not told.  Readers see
 * either the old row or the new one, never both and never neither: the
 * delete and the insert commit together.  A row that another transaction
 * holds or is deleting (the purge) is left where it is.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/compact.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "executor/executor.h"
#include "pgstat.h"
#include "storage/bufmgr.h"
#include "storage/freespace.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "queue.h"

PG_FUNCTION_INFO_V1(pgjq_compact_result_heap);
PG_FUNCTION_INFO_V1(pgjq_free_space);

/* a table smaller than this is left alone: the gain is not worth a move */
#define COMPACT_MIN_BLOCKS	((BlockNumber) (8 * 1024 * 1024 / BLCKSZ))

/*
 * The compaction this backend is doing: once it has marked the tail full
 * in the free space map, the map no longer tells how much is free, so the
 * first block to empty is remembered until the tail is empty.
 */
static struct
{
	Oid			relid;
	BlockNumber keep;
}			compacting = {InvalidOid, 0};

/*
 * The results inserted into jq.job_result (by the statistics), besides the
 * rows this backend moved itself, when it last measured the rate of acks,
 * and when that was (0: never), and what it found.
 */
static PgStat_Counter inserted_before = 0;
static TimestampTz measured_at = 0;
static bool was_quiet = false;

/* acks per second under which jq.job_result counts as quiet */
#define QUIET_ACKS_PER_SECOND 100

/*
 * quiet tells whether results came in at fewer than QUIET_ACKS_PER_SECOND
 * a second since this backend last measured, at least a second ago (a
 * call sooner gets the last answer; the first call, no).  Moves only pay
 * while acks are few: under a steady stream of acks the rows moved take
 * the room that the acks would have taken, the acks extend the table at
 * its end instead, and the next pass finds a new tail to move.  A table
 * that a held snapshot or a batch run bloated under load is compacted once
 * the load eases.  The statistics lag by a second or so.
 */
static bool
quiet(Relation rel)
{
	TimestampTz now = GetCurrentTimestamp();
	PgStat_StatTabEntry *stats;
	PgStat_Counter inserted;

	if (measured_at != 0 && !TimestampDifferenceExceeds(measured_at, now, 1000))
		return was_quiet;
	stats = pgstat_fetch_stat_tabentry(RelationGetRelid(rel));
	inserted = stats != NULL ? stats->tuples_inserted : 0;
	if (measured_at != 0)
		was_quiet = (inserted - inserted_before) * USECS_PER_SEC <
			(PgStat_Counter) QUIET_ACKS_PER_SECOND * (now - measured_at);
	inserted_before = inserted;
	measured_at = now;
	return was_quiet;
}

/*
 * recorded_free_bytes sums what the free space map records free in the
 * first nblocks blocks of rel: for a table, the room vacuum found on each
 * page; for a btree, the pages vacuum deleted and made free for reuse
 * (recorded whole).  0 until a vacuum has recorded anything.
 */
static uint64
recorded_free_bytes(Relation rel, BlockNumber nblocks)
{
	uint64		free_bytes = 0;

	for (BlockNumber blk = 0; blk < nblocks; blk++)
		free_bytes += GetRecordedFreeSpace(rel, blk);
	return free_bytes;
}

/*
 * btree_free_bytes reads every page of a btree index and sums the room a
 * rebuild would give back: whole pages that are new, deleted or half-dead,
 * and the free space on the others.  Unlike the free space map, which
 * only knows of the pages vacuum deleted, this also sees pages that hold a
 * few live entries among the room of many removed ones (results kept here
 * and there across a held snapshot's churn).
 */
static uint64
btree_free_bytes(Relation rel, BlockNumber nblocks)
{
	BufferAccessStrategy strategy = GetAccessStrategy(BAS_BULKREAD);
	uint64		free_bytes = 0;

	for (BlockNumber blk = BTREE_METAPAGE + 1; blk < nblocks; blk++)
	{
		Buffer		buf;
		Page		page;

		CHECK_FOR_INTERRUPTS();
		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blk, RBM_NORMAL, strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		page = BufferGetPage(buf);
		if (PageIsNew(page) ||
			P_IGNORE((BTPageOpaque) PageGetSpecialPointer(page)))
			free_bytes += BLCKSZ;
		else
			free_bytes += PageGetExactFreeSpace(page);
		UnlockReleaseBuffer(buf);
	}
	FreeAccessStrategy(strategy);
	return free_bytes;
}

/*
 * jq.free_space(rel) is the fraction of a pgjq table's or index's file
 * that is free (0 to 1): for a table, what its free space map records,
 * as vacuum last left it; for a btree index, what a rebuild would give
 * back, read from its pages.  An index more than half free is one that a
 * burst or a held snapshot grew past what it holds: jq.compact rebuilds
 * those.  NULL for a relation outside schema jq or without storage.
 */
Datum
pgjq_free_space(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	Relation	rel;
	BlockNumber nblocks;
	float8		fraction;

	rel = try_relation_open(relid, AccessShareLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (get_namespace_oid(PGJQ_SCHEMA, false) != RelationGetNamespace(rel) ||
		!RELKIND_HAS_STORAGE(rel->rd_rel->relkind))
	{
		relation_close(rel, AccessShareLock);
		PG_RETURN_NULL();
	}
	nblocks = RelationGetNumberOfBlocks(rel);
	if (nblocks <= 1)
		fraction = 0.0;
	else if (rel->rd_rel->relkind == RELKIND_INDEX && rel->rd_rel->relam == BTREE_AM_OID)
		fraction = (float8) btree_free_bytes(rel, nblocks) / ((float8) nblocks * BLCKSZ);
	else
		fraction = (float8) recorded_free_bytes(rel, nblocks) / ((float8) nblocks * BLCKSZ);
	relation_close(rel, AccessShareLock);
	PG_RETURN_FLOAT8(fraction);
}

/*
 * tail_start finds the first block of the tail to empty: the longest run
 * of last blocks whose rows fit, with a tenth to spare, into the room the
 * free space map records before it.  A block counts as used for what the
 * map does not record as free in it.
 */
static BlockNumber
tail_start(Relation rel, BlockNumber nblocks)
{
	uint64		total_free = recorded_free_bytes(rel, nblocks);
	uint64		tail_free = 0;
	uint64		tail_used = 0;
	BlockNumber keep = nblocks;

	while (keep > 0)
	{
		Size		free_here = GetRecordedFreeSpace(rel, keep - 1);

		if ((total_free - tail_free - free_here) * 10 <
			(tail_used + BLCKSZ - free_here) * 11)
			break;				/* the rows of keep - 1 would not fit too */
		tail_free += free_here;
		tail_used += BLCKSZ - free_here;
		keep--;
	}
	return keep;
}

/*
 * jq.compact_result_heap(max_rows) moves up to max_rows live rows of
 * jq.job_result off its tail (tail_start), when that is at least a quarter
 * of the table and acks are few (quiet), into the room before it, which
 * the free space map (kept by vacuum) records.  Returns how many rows it
 * moved; 0 the first time a backend calls it (it has not yet seen the
 * rate of acks).
 */
Datum
pgjq_compact_result_heap(PG_FUNCTION_ARGS)
{
	int32		max_rows = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0);
	Relation	rel;
	BlockNumber nblocks;
	BlockNumber keep;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	TupleTableSlot *copy;
	TableScanDesc scan;
	Snapshot	snapshot;
	CommandId	cid;
	int32		moved = 0;
	bool		full = false;
	BlockNumber free_block;

	if (PG_ARGISNULL(0) || max_rows < 1 || max_rows > 1000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be between 1 and %d", 1000000),
				 PG_ARGISNULL(0) ? errdetail("Got NULL.") :
				 errdetail("Got %d.", max_rows)));

	(void) pgjq_lock_job_table();	/* the lock order: see queue.c */
	rel = table_open(pgjq_result_table(), NoLock);
	if (!quiet(rel))
	{
		compacting.relid = InvalidOid;
		table_close(rel, NoLock);
		PG_RETURN_INT32(0);		/* acks are coming in: later */
	}
	nblocks = RelationGetNumberOfBlocks(rel);
	if (compacting.relid == RelationGetRelid(rel) && compacting.keep < nblocks)
		keep = compacting.keep; /* a compaction this backend began goes on */
	else
	{
		compacting.relid = InvalidOid;
		if (nblocks < COMPACT_MIN_BLOCKS)
		{
			table_close(rel, NoLock);
			PG_RETURN_INT32(0);
		}
		keep = tail_start(rel, nblocks);
		if (nblocks - keep < nblocks / 4)
		{
			table_close(rel, NoLock);
			PG_RETURN_INT32(0); /* less than a quarter to give back */
		}
		compacting.relid = RelationGetRelid(rel);
		compacting.keep = keep;
	}

	/*
	 * Mark the pages to empty full, so that no insert, ours or an ack's, is
	 * sent there (again: vacuum records their room once they are empty).
	 */
	for (BlockNumber blk = keep; blk < nblocks; blk++)
		RecordPageWithFreeSpace(rel, blk, 0);
	FreeSpaceMapVacuumRange(rel, keep, nblocks);

	/*
	 * A backend also inserts into the page it last inserted into, while that
	 * has room, without asking the map: a relcache invalidation makes every
	 * backend forget that page, so that none keeps filling the tail.
	 */
	CacheInvalidateRelcache(rel);

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = table_slot_create(rel, &estate->es_tupleTable);
	copy = table_slot_create(rel, &estate->es_tupleTable);

	CommandCounterIncrement();
	cid = GetCurrentCommandId(true);
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	/* not synchronized with other scans: it must start at keep */
	scan = table_beginscan_strat(rel, snapshot, 0, NULL, true, false);
	heap_setscanlimits(scan, keep, nblocks - keep);
	while (moved < max_rows && table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		TM_FailureData tmfd;
		TM_Result	result;

		CHECK_FOR_INTERRUPTS();

		/*
		 * Only while the map knows a page before the tail with room for the
		 * row: an insert that finds none extends the table, at its end.
		 */
		slot_getallattrs(slot);
		free_block = GetPageWithFreeSpace(rel,
										  heap_compute_data_size(RelationGetDescr(rel),
																 slot->tts_values,
																 slot->tts_isnull) +
										  MAXALIGN(SizeofHeapTupleHeader +
												   BITMAPLEN(RelationGetDescr(rel)->natts)) +
										  sizeof(ItemIdData));
		if (free_block == InvalidBlockNumber || free_block >= keep)
		{
			full = true;
			break;
		}

		/* without waiting: a row someone holds stays for the next pass */
		result = table_tuple_delete(rel, &slot->tts_tid, cid, snapshot,
									InvalidSnapshot, false, &tmfd, false);
		if (result != TM_Ok)
			continue;
		ExecCopySlot(copy, slot);
		table_tuple_insert(rel, copy, cid, 0, NULL);
		(void) pgjq_insert_new_index_tuples(rri, copy, estate);
		ResetPerTupleExprContext(estate);
		moved++;
		if (ItemPointerGetBlockNumber(&copy->tts_tid) >= keep)
		{
			full = true;		/* it went to the tail after all: stop */
			break;
		}
	}
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	inserted_before += moved;	/* not the acks' */
	if (moved == 0 || full)
		compacting.relid = InvalidOid;	/* the tail is empty, or there is no
										 * more room before it: vacuum's turn */

	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	PG_RETURN_INT32(moved);
}
