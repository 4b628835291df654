/*
** compaction.h: when a table compacts, and who gives its space back (the SQL face's side of
** compact.c). See docs/operations.md for what users see.
**
** Steps run inside write transactions, just before their commit (mmkv_compaction_sync): an
** automatic step when garbage reaches the table's autocompact= share of its log, in the
** transaction of whoever writes, so that compaction adds no lock, no thread and no waiting to a
** workload that writes; and the steps of a compaction asked for with 'compact' (or by a commit
** that left far more garbage than steps take away), each in a short transaction of the worker's
** (worker.h), so that it finishes without further writes of the user's; a table that is not in a
** database file has no worker, and runs such a pass in its own connection. After a commit that
** moved the log's start (mmkv_compaction_committed) the space below it is given back once no
** reader can need it: by the worker for a table in a database file, at once
** for a table of a temporary or in-memory database when no cursor of it is open and no other
** process or connection has its files open.
*/
#ifndef MMKV_COMPACTION_H
#define MMKV_COMPACTION_H

#include "tables.h"

/* Budget of a step the worker runs ('compact-step'): well under a millisecond of work, so that a
** writer that finds the database locked by a step gets in at its busy handler's first retries. */
#define MMKV_COMPACT_STEP_BYTES ((uint64_t)256 << 10)

/* Before t's prepare: a step, if one is due. */
int mmkv_compaction_sync(mmkv_table *t, char **err);
/* After t's commit. */
void mmkv_compaction_committed(mmkv_table *t);
/* INSERT INTO kv(kv) VALUES('compact'): asks for a compaction of the whole log and returns; for a
** table in a database file the worker runs it, for others it runs to its end here (only this
** connection can be held up). 'compact-step': a step of the compaction asked for, in this
** transaction (the worker's). The transaction is already begun. */
int mmkv_compaction_command(mmkv_table *t, int step_only, char **err);

#endif
