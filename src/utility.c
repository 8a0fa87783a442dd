/*-------------------------------------------------------------------------
 *
 * utility.c
 *	  What DDL on the extension and on databases means for the pgjq
 *	  workers: a ProcessUtility hook, installed while pgjq is preloaded.
 *
 * CREATE, ALTER and DROP EXTENSION pgjq: at the commit of the
 * transaction, the database's worker is told to look at once (it exits
 * when pgjq is gone, waits when the schema is of another version), or the
 * launcher to start one.  CREATE DATABASE: the launcher looks at the new
 * database at once, as it may be a copy of one with pgjq.  Done at commit,
 * since a worker that looked before would not see the change.
 *
 * DROP DATABASE, ALTER DATABASE ... RENAME or SET TABLESPACE, and CREATE
 * DATABASE ... TEMPLATE need the database to themselves: a worker
 * connected to it makes them fail with "database is being accessed by
 * other users".  Before they run, the database is held (the launcher
 * starts no worker there) and its worker is stopped; after them, the hold
 * ends, unless the database was dropped.
 *
 * Copyright (c) 2026, the pgjq developers
 *
 * IDENTIFICATION
 *	  src/utility.c
 *
 *-------------------------------------------------------------------------
 */
#include "pgjq.h"

#include <signal.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "tcop/utility.h"
#include "utils/timestamp.h"

#include "launcher.h"
#include "utility.h"

/* how long a database stays held at most, and how long to wait for a stop */
#define PGJQ_HOLD_SECONDS		60
#define PGJQ_STOP_WAIT_SECONDS	10

static ProcessUtility_hook_type prev_ProcessUtility = NULL;

/* the database whose worker to tell at commit that pgjq changed, or none */
static Oid	changed_dboid = InvalidOid;

static void
utility_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (OidIsValid(changed_dboid))
				pgjq_extension_changed(changed_dboid);
			changed_dboid = InvalidOid;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			changed_dboid = InvalidOid;
			break;
		default:
			break;
	}
}

/* names_pgjq tells whether a DROP EXTENSION's object list names pgjq */
static bool
names_pgjq(List *objects)
{
	ListCell   *lc;

	foreach(lc, objects)
		if (IsA(lfirst(lc), String) && strcmp(strVal(lfirst(lc)), "pgjq") == 0)
			return true;
	return false;
}

/*
 * database_needed_alone returns the database that a statement needs with
 * no other session connected, or InvalidOid.  Only for a caller who owns
 * the database (every one of these statements requires it, or superuser):
 * others must not be able to stop its worker by trying.
 */
static Oid
database_needed_alone(Node *parsetree)
{
	const char *dbname = NULL;
	Oid			dboid;
	ListCell   *lc;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			dbname = ((DropdbStmt *) parsetree)->dbname;
			break;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				dbname = ((RenameStmt *) parsetree)->subname;
			break;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
				if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
					dbname = ((AlterDatabaseStmt *) parsetree)->dbname;
			break;
		case T_CreatedbStmt:
			dbname = "template1";
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
				if (strcmp(((DefElem *) lfirst(lc))->defname, "template") == 0)
					dbname = defGetString((DefElem *) lfirst(lc));
			break;
		default:
			break;
	}
	if (dbname == NULL)
		return InvalidOid;
	dboid = get_database_oid(dbname, true);
	if (!OidIsValid(dboid) || !pgjq_database_ownercheck(dboid))
		return InvalidOid;
	return dboid;
}

/*
 * stop_worker holds the database and stops its worker, waiting until it
 * has gone (or PGJQ_STOP_WAIT_SECONDS passed: the statement then reports
 * the database busy, as it would have).
 */
static void
stop_worker(Oid dboid)
{
	pid_t		pid = pgjq_hold_database(dboid, PGJQ_HOLD_SECONDS);
	TimestampTz deadline;

	if (pid == 0)
		return;
	(void) kill(pid, SIGTERM);
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
										   PGJQ_STOP_WAIT_SECONDS * 1000);
	while (GetCurrentTimestamp() < deadline)
	{
		pid_t		now_pid;

		if (pgjq_database_worker(dboid, &now_pid) != PGJQ_WORKER_RUNNING &&
			now_pid == 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
pgjq_ProcessUtility(PlannedStmt *pstmt, const char *queryString,
					bool readOnlyTree, ProcessUtilityContext context,
					ParamListInfo params, QueryEnvironment *queryEnv,
					DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	volatile Oid alone = InvalidOid;
	volatile bool dropped = false;

	switch (nodeTag(parsetree))
	{
		case T_CreateExtensionStmt:
			if (strcmp(((CreateExtensionStmt *) parsetree)->extname, "pgjq") == 0)
				changed_dboid = MyDatabaseId;
			break;
		case T_AlterExtensionStmt:
			if (strcmp(((AlterExtensionStmt *) parsetree)->extname, "pgjq") == 0)
				changed_dboid = MyDatabaseId;
			break;
		case T_DropStmt:
			if (((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION &&
				names_pgjq(((DropStmt *) parsetree)->objects))
				changed_dboid = MyDatabaseId;
			break;
		default:
			alone = database_needed_alone(parsetree);
			break;
	}

	if (OidIsValid(alone))
		stop_worker(alone);
	PG_TRY();
	{
		if (prev_ProcessUtility)
			prev_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
		dropped = IsA(parsetree, DropdbStmt);
		if (IsA(parsetree, CreatedbStmt))
			changed_dboid = get_database_oid(((CreatedbStmt *) parsetree)->dbname, true);
	}
	PG_FINALLY();
	{
		/* a dropped database stays held until its hold expires */
		if (OidIsValid(alone) && !dropped)
			pgjq_release_database(alone);
	}
	PG_END_TRY();
}

/*
 * pgjq_utility_init installs the hook and the transaction callback; called
 * from _PG_init while pgjq is preloaded.
 */
void
pgjq_utility_init(void)
{
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = pgjq_ProcessUtility;
	RegisterXactCallback(utility_xact_callback, NULL);
}
