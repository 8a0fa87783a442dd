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
 * Moves pay only while acks are few (quiet): under a steady stream of acks
 * the rows moved take the room the acks would have taken, and the acks
 * extend the table instead.  Under load the tail is only closed: marked
 * full again after each vacuum (which records its room), so that the acks
 * fill the room before it while the tail's rows reach their retention and
 * are purged; then vacuum truncates the tail.  Should the room before the
 * tail run out (the table grew), the tail is opened again at once, its
 * real room recorded, rather than let the acks extend the table past it.
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
#include "tcop/utility.h"
#include "utils/inval.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "counters.h"
#include "queue.h"

PG_FUNCTION_INFO_V1(pgjq_compact_result_heap);
PG_FUNCTION_INFO_V1(pgjq_free_space);

/* a table smaller than this is left alone: the gain is not worth a move */
#define COMPACT_MIN_BLOCKS	((BlockNumber) (8 * 1024 * 1024 / BLCKSZ))

/*
 * The compaction this backend is doing: once it has marked the tail full
 * in the free space map, the map no longer tells how much is free, so the
 * first block to empty is remembered until vacuum has truncated the table
 * there (or the tail is opened again).
 */
static struct
{
	Oid			relid;
	BlockNumber keep;			/* the first block of the tail */
	BlockNumber nblocks;		/* the table's length when it was closed */
}			compacting = {InvalidOid, 0, 0};

/*
 * Under load, the tail is closed only when more than this fraction of the
 * table is recorded free: a table at its working size (the soak's, under
 * 3,000 acks a second, is about half free right after a vacuum) needs its
 * room for the acks to come before the next vacuum.
 */
#define CLOSE_MIN_FREE_FRACTION 0.6

/*
 * The results stored when this backend last measured the rate of acks
 * (pgjq's counters: moves are not counted), when that was (0: never), and
 * what it found.
 */
static int64 results_before = 0;
static int64 rows_moved = 0;	/* by this backend, for the statistics */
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
 * its end instead, and the next pass finds a new tail to move.  The count
 * of results is pgjq's own (exact at each commit); without pgjq's shared
 * memory, the table's statistics (which lag by a second or more).
 */
static bool
quiet(Relation rel)
{
	TimestampTz now = GetCurrentTimestamp();
	int64		results;

	if (measured_at != 0 && !TimestampDifferenceExceeds(measured_at, now, 1000))
		return was_quiet;
	results = pgjq_counters_results_total();
	if (results < 0)
	{
		PgStat_StatTabEntry *stats = pgstat_fetch_stat_tabentry(RelationGetRelid(rel));

		results = (stats != NULL ? stats->tuples_inserted : 0) - rows_moved;
	}
	if (measured_at != 0)
		was_quiet = results >= results_before &&	/* not rebuilt meanwhile */
			(results - results_before) * USECS_PER_SEC <
			(int64) QUIET_ACKS_PER_SECOND * (now - measured_at);
	results_before = results;
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
 * of last blocks whose rows, times room_tenths / 10, fit into the room the
 * free space map records before it (total_free in all).  A block counts
 * as used for what the map does not record as free in it.
 */
static BlockNumber
tail_start(Relation rel, BlockNumber nblocks, uint64 total_free, int room_tenths)
{
	uint64		tail_free = 0;
	uint64		tail_used = 0;
	BlockNumber keep = nblocks;

	while (keep > 0)
	{
		Size		free_here = GetRecordedFreeSpace(rel, keep - 1);

		if ((total_free - tail_free - free_here) * 10 <
			(tail_used + BLCKSZ - free_here) * room_tenths)
			break;				/* the rows of keep - 1 would not fit too */
		tail_free += free_here;
		tail_used += BLCKSZ - free_here;
		keep--;
	}
	return keep;
}

/*
 * close_tail marks the blocks from keep to nblocks full in the free space
 * map, so that no insert, a move's or an ack's, is sent there.  Only what
 * vacuum recorded since the last call needs marking again; then every
 * backend is made to forget the page it last inserted into (a backend
 * fills that page while it has room, without asking the map) by a relcache
 * invalidation.
 */
static void
close_tail(Relation rel, BlockNumber keep, BlockNumber nblocks)
{
	bool		opened = false;

	for (BlockNumber blk = keep; blk < nblocks; blk++)
	{
		if (GetRecordedFreeSpace(rel, blk) == 0)
			continue;
		RecordPageWithFreeSpace(rel, blk, 0);
		opened = true;
	}
	if (!opened)
		return;
	FreeSpaceMapVacuumRange(rel, keep, nblocks);
	CacheInvalidateRelcache(rel);
}

/*
 * open_tail records the room each block from keep to nblocks really has,
 * read from the page, as vacuum would, for inserts to use it again.
 */
static void
open_tail(Relation rel, BlockNumber keep, BlockNumber nblocks)
{
	BufferAccessStrategy strategy = GetAccessStrategy(BAS_BULKREAD);

	for (BlockNumber blk = keep; blk < nblocks; blk++)
	{
		Buffer		buf;
		Size		room;

		CHECK_FOR_INTERRUPTS();
		buf = ReadBufferExtended(rel, MAIN_FORKNUM, blk, RBM_NORMAL, strategy);
		LockBuffer(buf, BUFFER_LOCK_SHARE);
		room = PageIsNew(BufferGetPage(buf)) ? BLCKSZ - SizeOfPageHeaderData :
			PageGetHeapFreeSpace(BufferGetPage(buf));
		UnlockReleaseBuffer(buf);
		RecordPageWithFreeSpace(rel, blk, room);
	}
	FreeSpaceMapVacuumRange(rel, keep, nblocks);
	FreeAccessStrategy(strategy);
}

/*
 * jq.compact_result_heap(max_rows) closes the tail of jq.job_result
 * (tail_start) to inserts, when that is at least a quarter of the table,
 * and while acks are few (quiet) moves up to max_rows of its live rows
 * into the room before it, which the free space map (kept by vacuum)
 * records.  Under load it only closes the tail, and only of a table more
 * than CLOSE_MIN_FREE_FRACTION free.  Returns how many rows it moved; none
 * the first time a backend calls it (it has not yet seen the rate of
 * acks).
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
	bool		moving;
	BlockNumber free_block;

	if (PG_ARGISNULL(0) || max_rows < 1 || max_rows > 1000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be between 1 and %d", 1000000),
				 PG_ARGISNULL(0) ? errdetail("Got NULL.") :
				 errdetail("Got %d.", max_rows)));

	PreventCommandIfReadOnly("jq.compact_result_heap()");
	(void) pgjq_lock_job_table();	/* the lock order: see queue.c */
	rel = table_open(pgjq_result_table(), NoLock);
	moving = quiet(rel);
	nblocks = RelationGetNumberOfBlocks(rel);
	if (compacting.relid == RelationGetRelid(rel) && compacting.keep < nblocks)
	{
		if (nblocks > compacting.nblocks)
		{
			/*
			 * Inserts found no room before the tail and extended the table:
			 * their rows at its end would keep vacuum from truncating it for
			 * a whole retention, and the tail's room would stay unused.
			 */
			open_tail(rel, compacting.keep, compacting.nblocks);
			ereport(LOG,
					(errmsg("pgjq: opened the last %u pages of jq.job_result to inserts again: the room before them ran out",
							compacting.nblocks - compacting.keep)));
			compacting.relid = InvalidOid;
			table_close(rel, NoLock);
			PG_RETURN_INT32(0);
		}
		keep = compacting.keep; /* a compaction this backend began goes on */
		compacting.nblocks = nblocks;	/* vacuum may have truncated a part */
	}
	else
	{
		uint64		total_free;

		compacting.relid = InvalidOid;
		if (nblocks < COMPACT_MIN_BLOCKS)
		{
			table_close(rel, NoLock);
			PG_RETURN_INT32(0);
		}
		total_free = recorded_free_bytes(rel, nblocks);
		if (!moving &&
			total_free < CLOSE_MIN_FREE_FRACTION * nblocks * BLCKSZ)
		{
			table_close(rel, NoLock);
			PG_RETURN_INT32(0); /* under load, the acks need that room */
		}

		/*
		 * While rows are moved, their room before the tail must hold them
		 * (with a tenth to spare); under load, the room must also take the
		 * acks until the tail's rows are purged: twice the tail's rows, and
		 * a quarter of the table at least (a table four times bloated comes
		 * back to its working size in one round; more, in several).
		 */
		keep = tail_start(rel, nblocks, total_free, moving ? 11 : 20);
		if (!moving)
			keep = Max(keep, nblocks / 4);
		if (nblocks - keep < nblocks / 4)
		{
			table_close(rel, NoLock);
			PG_RETURN_INT32(0); /* less than a quarter to give back */
		}
		compacting.relid = RelationGetRelid(rel);
		compacting.keep = keep;
		compacting.nblocks = nblocks;
		ereport(LOG,
				(errmsg("pgjq: closed the last %u of the %u pages of jq.job_result to inserts, for vacuum to truncate them once they are empty",
						nblocks - keep, nblocks),
				 errdetail(moving ? "Acks are few: their rows are moved before them." :
						   "Acks are coming in: their rows stay until their retention ends.")));
	}

	close_tail(rel, keep, nblocks);
	if (!moving)
	{
		table_close(rel, NoLock);
		PG_RETURN_INT32(0);		/* acks are coming in: the tail waits */
	}

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
			break;				/* the room before the tail is taken */

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
			break;				/* it went to the tail after all: stop */
	}
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	rows_moved += moved;

	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	PG_RETURN_INT32(moved);
}
