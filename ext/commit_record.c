/*
** The commit record: a one-row shadow table that makes SQLite the judge of what an mmkv table has
** committed. See commit_record.h.
*/
#include "commit_record.h"

#include <string.h>

SQLITE_EXTENSION_INIT3

#define RECORD_ROWID 1
#define RECORD_V1_BYTES 40
#define RECORD_V2_BYTES 96
#define RECORD_V2_COMMIT_AT 8     /* where a version 2 record's commit fields begin */
#define RECORD_COMMIT_FIELDS 6    /* txid, tail, live, records, garbage, generation */
#define RECORD_V2_DISPLACED_AT 56 /* the displaced owner */
#define RECORD_V2_START_AT 64     /* the log's start (0 in records written before compaction) */
#define RECORD_V2_COMPACTIONS_AT 72 /* compactions finished */
#define RECORD_V2_REDO_FROM_AT 80   /* where the records the redo row keeps begin (0: none) */
#define REDO_ROWID 2

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The commit fields, as both versions lay them out from their commit offset (version 1 has no
** generation: its five fields are the first five). */
static void encode_commit(const mmkv_commit *state, unsigned char *at)
{
    put_u64(at, state->txid);
    put_u64(at + 8, state->tail);
    put_u64(at + 16, state->live_count);
    put_u64(at + 24, state->record_count);
    put_u64(at + 32, state->garbage_bytes);
    put_u64(at + 40, 0); /* generation */
}

static void decode_commit(const unsigned char *at, mmkv_commit *state)
{
    state->txid = get_u64(at);
    state->tail = get_u64(at + 8);
    state->live_count = get_u64(at + 16);
    state->record_count = get_u64(at + 24);
    state->garbage_bytes = get_u64(at + 32);
}

/* The version of a state blob, or 0 if it is neither. */
static int blob_version(const unsigned char *blob, int bytes)
{
    if (bytes == RECORD_V1_BYTES) return 1;
    if (bytes == RECORD_V2_BYTES && get_u64(blob) == 2) return 2;
    return 0;
}

static int fail(char **err, sqlite3 *db, const char *what)
{
    if (err) *err = sqlite3_mprintf("mmkv: %s: %s", what, sqlite3_errmsg(db));
    return SQLITE_ERROR;
}

static int names_set(mmkv_commit_record *rec, sqlite3 *db, const char *schema,
                     const char *vtab_name)
{
    memset(rec, 0, sizeof *rec);
    rec->db = db;
    rec->schema = sqlite3_mprintf("%s", schema);
    rec->table = sqlite3_mprintf("%s_%s", vtab_name, MMKV_COMMIT_SUFFIX);
    return rec->schema && rec->table ? SQLITE_OK : SQLITE_NOMEM;
}

static void statements_finalize(mmkv_commit_record *rec)
{
    sqlite3_finalize(rec->read);
    rec->read = NULL;
}

static int prepare(mmkv_commit_record *rec, sqlite3_stmt **stmt, const char *format)
{
    if (*stmt) return SQLITE_OK;
    char *sql = sqlite3_mprintf(format, rec->schema, rec->table);
    if (!sql) return SQLITE_NOMEM;
    int rc = sqlite3_prepare_v2(rec->db, sql, -1, stmt, NULL);
    sqlite3_free(sql);
    return rc;
}

int mmkv_record_create(mmkv_commit_record *rec, sqlite3 *db, const char *schema,
                       const char *vtab_name, uint64_t owner_id, const mmkv_commit *state,
                       uint64_t displaced_owner, char **err)
{
    int rc = names_set(rec, db, schema, vtab_name);
    if (rc != SQLITE_OK) return rc;
    rec->owner_id = owner_id;
    rec->version = 2;
    rec->displaced_owner = displaced_owner;
    unsigned char blob[RECORD_V2_BYTES];
    memset(blob, 0, sizeof blob);
    put_u64(blob, 2);
    encode_commit(state, blob + RECORD_V2_COMMIT_AT);
    put_u64(blob + RECORD_V2_DISPLACED_AT, displaced_owner);
    put_u64(blob + RECORD_V2_START_AT, state->start);
    put_u64(blob + RECORD_V2_COMPACTIONS_AT, state->compactions);
    char hex[2 * RECORD_V2_BYTES + 1];
    for (int i = 0; i < RECORD_V2_BYTES; i++)
        sqlite3_snprintf(3, hex + 2 * i, "%02x", blob[i]);
    /* CREATE TABLE ... AS SELECT: its rows (the record, rowid 1, and the redo, rowid 2) are
    ** written without touching changes(). */
    char *sql = sqlite3_mprintf("CREATE TABLE \"%w\".\"%w\" AS SELECT %lld AS owner, x'%s' AS state "
                                "UNION ALL SELECT NULL, zeroblob(%d)",
                                schema, rec->table, (sqlite3_int64)owner_id, hex,
                                MMKV_REDO_CAPACITY);
    if (!sql) return SQLITE_NOMEM;
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return fail(err, db, "cannot create the commit record");
    rec->redo_capacity = MMKV_REDO_CAPACITY;
    return SQLITE_OK;
}

/* The redo row's size: what it can keep (0 if the table has none: made before it existed). */
static int redo_capacity(mmkv_commit_record *rec, uint64_t *capacity)
{
    sqlite3_stmt *stmt = NULL;
    *capacity = 0;
    int rc = prepare(rec, &stmt, "SELECT length(state) FROM \"%w\".\"%w\" WHERE rowid = 2");
    if (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (sqlite3_column_type(stmt, 0) == SQLITE_INTEGER)
            *capacity = (uint64_t)sqlite3_column_int64(stmt, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(stmt);
    return rc;
}

int mmkv_record_open(mmkv_commit_record *rec, sqlite3 *db, const char *schema,
                     const char *vtab_name, char **err)
{
    int rc = names_set(rec, db, schema, vtab_name);
    if (rc != SQLITE_OK) return rc;
    sqlite3_stmt *stmt = NULL;
    rc = prepare(rec, &stmt, "SELECT owner, state FROM \"%w\".\"%w\" WHERE rowid = 1");
    if (rc != SQLITE_OK) {
        /* No such table: the database has no record of this table (an in-memory one, or a file
        ** whose table predates it). */
        sqlite3_finalize(stmt);
        return SQLITE_NOTFOUND;
    }
    if (sqlite3_step(stmt) == SQLITE_ROW) {
        rec->owner_id = (uint64_t)sqlite3_column_int64(stmt, 0);
        const unsigned char *blob = sqlite3_column_blob(stmt, 1);
        int bytes = sqlite3_column_bytes(stmt, 1);
        rec->version = blob ? blob_version(blob, bytes) : 0;
        if (rec->version == 2) rec->displaced_owner = get_u64(blob + RECORD_V2_DISPLACED_AT);
        if (!rec->version) {
            if (err) *err = sqlite3_mprintf("mmkv: the commit record \"%s\" is damaged", rec->table);
            rc = SQLITE_CORRUPT_VTAB;
        }
    } else {
        rc = fail(err, db, "the table's commit record is missing");
    }
    sqlite3_finalize(stmt);
    return rc; /* the redo row's size is asked when a record first needs it (redo_capacity) */
}

void mmkv_record_close(mmkv_commit_record *rec)
{
    statements_finalize(rec);
    sqlite3_free(rec->schema);
    sqlite3_free(rec->table);
    memset(rec, 0, sizeof *rec);
}

int mmkv_record_read(mmkv_commit_record *rec, mmkv_commit *state, char **err)
{
    int rc = prepare(rec, &rec->read, "SELECT state FROM \"%w\".\"%w\" WHERE rowid = 1");
    if (rc != SQLITE_OK) return fail(err, rec->db, "cannot read the commit record");
    rc = sqlite3_step(rec->read);
    if (rc == SQLITE_ROW && sqlite3_column_type(rec->read, 0) == SQLITE_BLOB) {
        const unsigned char *blob = sqlite3_column_blob(rec->read, 0);
        int version = blob_version(blob, sqlite3_column_bytes(rec->read, 0));
        if (version) decode_commit(version == 2 ? blob + RECORD_V2_COMMIT_AT : blob, state);
        state->start = version == 2 ? get_u64(blob + RECORD_V2_START_AT) : 0;
        state->compactions = version == 2 ? get_u64(blob + RECORD_V2_COMPACTIONS_AT) : 0;
        rec->redo_from = version == 2 ? get_u64(blob + RECORD_V2_REDO_FROM_AT) : 0;
        /* A version 1 record becomes version 2 when its table first compacts, and back if that
        ** transaction rolls back: the version read is the version in force. */
        rc = version ? SQLITE_OK : SQLITE_CORRUPT;
        if (version) rec->version = version;
    } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
        rc = SQLITE_CORRUPT;
    }
    sqlite3_reset(rec->read);
    /* A record that keeps records: the row must hold them (its size is asked the first time, or
    ** again if another connection may have made the row since). */
    if (rc == SQLITE_OK && rec->redo_from) {
        uint64_t kept = rec->redo_from <= state->tail ? state->tail - rec->redo_from : UINT64_MAX;
        if (kept > rec->redo_capacity && redo_capacity(rec, &rec->redo_capacity) != SQLITE_OK)
            return fail(err, rec->db, "cannot read the commit record");
        if (kept > rec->redo_capacity) rc = SQLITE_CORRUPT;
    }
    if (rc == SQLITE_CORRUPT) {
        if (err) *err = sqlite3_mprintf("mmkv: the commit record \"%s\" is damaged", rec->table);
        return SQLITE_CORRUPT_VTAB;
    }
    if (rc != SQLITE_OK) return fail(err, rec->db, "cannot read the commit record");
    rec->cached = *state;
    rec->have_cached = 1;
    return SQLITE_OK;
}

/* The database's data version changes whenever any connection commits to it; within one read
** transaction it stands still. */
static int data_version(mmkv_commit_record *rec, unsigned *version)
{
#ifdef SQLITE_FCNTL_DATA_VERSION
    /* NULL names main without a search of the schema names (every read asks). */
    const char *schema = sqlite3_stricmp(rec->schema, "main") == 0 ? NULL : rec->schema;
    return sqlite3_file_control(rec->db, schema, SQLITE_FCNTL_DATA_VERSION, version) == SQLITE_OK;
#else
    (void)rec;
    (void)version;
    return 0;
#endif
}

int mmkv_record_read_cached(mmkv_commit_record *rec, mmkv_commit *state, char **err)
{
    unsigned version = 0;
    int known = data_version(rec, &version);
    if (known && rec->have_cached && version == rec->data_version) {
        *state = rec->cached;
        return SQLITE_OK;
    }
    int rc = mmkv_record_read(rec, state, err);
    if (rc == SQLITE_OK && known)
        rec->data_version = version;
    else
        rec->have_cached = 0;
    return rc;
}

/* A version 1 record (mmkv 0.1) rewritten as version 2, for a state with a start to record. The
** one UPDATE of the record's life: sqlite3_total_changes() counts it. */
static int record_upgrade(mmkv_commit_record *rec, const mmkv_commit *state, char **err)
{
    unsigned char blob[RECORD_V2_BYTES];
    memset(blob, 0, sizeof blob);
    put_u64(blob, 2);
    encode_commit(state, blob + RECORD_V2_COMMIT_AT);
    put_u64(blob + RECORD_V2_START_AT, state->start);
    put_u64(blob + RECORD_V2_COMPACTIONS_AT, state->compactions);
    char *sql = sqlite3_mprintf("UPDATE \"%w\".\"%w\" SET state = ?1 WHERE rowid = 1", rec->schema,
                                rec->table);
    if (!sql) return SQLITE_NOMEM;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(rec->db, sql, -1, &stmt, NULL);
    sqlite3_free(sql);
    if (rc == SQLITE_OK) rc = sqlite3_bind_blob(stmt, 1, blob, (int)sizeof blob, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_step(stmt) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(rec->db);
    sqlite3_finalize(stmt);
    rec->have_cached = 0;
    if (rc != SQLITE_OK) return fail(err, rec->db, "cannot write the commit record");
    rec->version = 2;
    return SQLITE_OK;
}

/* Incremental blob I/O does not load the schema, which a failed DDL statement earlier in the
** transaction can leave unloaded (SQLite reloads it at the next statement it prepares): where
** the table is not found, a statement is prepared, which loads it, and the open tried again. */
static int record_blob_open(mmkv_commit_record *rec, int rowid, int writable, sqlite3_blob **out)
{
    int rc = sqlite3_blob_open(rec->db, rec->schema, rec->table, "state", rowid, writable, out);
    if (rc != SQLITE_ERROR) return rc;
    sqlite3_stmt *stmt = NULL;
    if (prepare(rec, &stmt, "SELECT 0 FROM \"%w\".\"%w\" WHERE 0") == SQLITE_OK)
        rc = sqlite3_blob_open(rec->db, rec->schema, rec->table, "state", rowid, writable, out);
    sqlite3_finalize(stmt);
    return rc;
}

/* The redo row of a table made before it existed (or of a version 1 record, whose second row
** might be anything): the one write of the record's life that sqlite3_total_changes() counts
** (as it counts record_upgrade's UPDATE). */
static int redo_row_add(mmkv_commit_record *rec, char **err)
{
    char *sql = sqlite3_mprintf("INSERT OR REPLACE INTO \"%w\".\"%w\"(rowid, owner, state) "
                                "VALUES(%d, NULL, zeroblob(%d))",
                                rec->schema, rec->table, REDO_ROWID, MMKV_REDO_CAPACITY);
    int rc = sql ? sqlite3_exec(rec->db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return fail(err, rec->db, "cannot add the commit record's redo row");
    rec->redo_capacity = MMKV_REDO_CAPACITY;
    return SQLITE_OK;
}

uint64_t mmkv_record_redo_room(mmkv_commit_record *rec)
{
    return rec->version == 2 ? MMKV_REDO_CAPACITY : 0;
}

int mmkv_record_write(mmkv_commit_record *rec, const mmkv_commit *state, const mmkv_redo *kept,
                      char **err)
{
    if (rec->version == 1 && state->start > MMKV_RECORD_FIRST_OFFSET)
        return record_upgrade(rec, state, err);
    if (kept && kept->len && rec->version == 2 && rec->redo_capacity < MMKV_REDO_CAPACITY) {
        /* Another connection may have made the row since this one looked: a row made again
        ** would lose what that connection's commits keep there. */
        int rc = redo_capacity(rec, &rec->redo_capacity);
        if (rc != SQLITE_OK) return fail(err, rec->db, "cannot read the commit record");
        if (rec->redo_capacity < MMKV_REDO_CAPACITY && (rc = redo_row_add(rec, err)) != SQLITE_OK)
            return rc;
    }
    unsigned char fields[8 * RECORD_COMMIT_FIELDS];
    encode_commit(state, fields);
    int at = rec->version == 2 ? RECORD_V2_COMMIT_AT : 0;
    int bytes = rec->version == 2 ? (int)sizeof fields : RECORD_V1_BYTES;
    sqlite3_blob *handle = NULL;
    int rc = record_blob_open(rec, RECORD_ROWID, 1, &handle);
    if (rc == SQLITE_OK) rc = sqlite3_blob_write(handle, fields, bytes, at);
    if (rc == SQLITE_OK && rec->version == 2) {
        unsigned char tail_fields[24];
        put_u64(tail_fields, state->start);
        put_u64(tail_fields + 8, state->compactions);
        put_u64(tail_fields + 16, rec->redo_from);
        rc = sqlite3_blob_write(handle, tail_fields, 24, RECORD_V2_START_AT);
    }
    if (rc == SQLITE_OK && kept && kept->len) {
        /* The records go where they lie from the redo's first byte. */
        if (rec->version != 2 || !rec->redo_from || kept->from < rec->redo_from ||
            kept->from - rec->redo_from + kept->len > rec->redo_capacity)
            rc = SQLITE_MISUSE;
        if (rc == SQLITE_OK) rc = sqlite3_blob_reopen(handle, REDO_ROWID);
        if (rc == SQLITE_OK)
            rc = sqlite3_blob_write(handle, kept->bytes, (int)kept->len,
                                    (int)(kept->from - rec->redo_from));
    }
    int close_rc = handle ? sqlite3_blob_close(handle) : SQLITE_OK;
    if (rc == SQLITE_OK) rc = close_rc;
    rec->have_cached = 0;
    if (rc != SQLITE_OK) return fail(err, rec->db, "cannot write the commit record");
    return SQLITE_OK;
}

int mmkv_record_redo_read(mmkv_commit_record *rec, const mmkv_commit *state, mmkv_redo *kept,
                          char **err)
{
    memset(kept, 0, sizeof *kept);
    if (!rec->redo_from || rec->redo_from >= state->tail) return SQLITE_OK;
    uint64_t len = state->tail - rec->redo_from;
    void *bytes = sqlite3_malloc64(len);
    if (!bytes) return SQLITE_NOMEM;
    sqlite3_blob *handle = NULL;
    int rc = record_blob_open(rec, REDO_ROWID, 0, &handle);
    if (rc == SQLITE_OK) rc = sqlite3_blob_read(handle, bytes, (int)len, 0);
    if (handle) sqlite3_blob_close(handle);
    if (rc != SQLITE_OK) {
        sqlite3_free(bytes);
        return fail(err, rec->db, "cannot read the records the commit record keeps");
    }
    kept->from = rec->redo_from;
    kept->bytes = bytes;
    kept->len = len;
    return SQLITE_OK;
}

int mmkv_record_renamed(mmkv_commit_record *rec, const char *vtab_name)
{
    char *table = sqlite3_mprintf("%s_%s", vtab_name, MMKV_COMMIT_SUFFIX);
    if (!table) return SQLITE_NOMEM;
    statements_finalize(rec);
    sqlite3_free(rec->table);
    rec->table = table;
    rec->have_cached = 0;
    return SQLITE_OK;
}

int mmkv_record_rename(mmkv_commit_record *rec, const char *new_vtab_name, char **err)
{
    char *sql = sqlite3_mprintf("ALTER TABLE \"%w\".\"%w\" RENAME TO \"%w_%w\"", rec->schema,
                                rec->table, new_vtab_name, MMKV_COMMIT_SUFFIX);
    int rc = sql ? sqlite3_exec(rec->db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return fail(err, rec->db, "cannot rename the commit record");
    return mmkv_record_renamed(rec, new_vtab_name);
}

int mmkv_record_drop(mmkv_commit_record *rec, char **err)
{
    statements_finalize(rec);
    char *sql = sqlite3_mprintf("DROP TABLE IF EXISTS \"%w\".\"%w\"", rec->schema, rec->table);
    int rc = sql ? sqlite3_exec(rec->db, sql, NULL, NULL, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    return rc == SQLITE_OK ? rc : fail(err, rec->db, "cannot drop the commit record");
}

int mmkv_record_find_owner(sqlite3 *db, const char *schema, uint64_t owner, char **vtab_name,
                           char **err)
{
    *vtab_name = NULL;
    char *sql = sqlite3_mprintf("SELECT substr(name, 1, length(name) - %d) FROM \"%w\".sqlite_schema "
                                "WHERE type = 'table' AND name LIKE '%%\\_%q' ESCAPE '\\'",
                                (int)sizeof(MMKV_COMMIT_SUFFIX), schema, MMKV_COMMIT_SUFFIX);
    sqlite3_stmt *names = NULL;
    int rc = sql ? sqlite3_prepare_v2(db, sql, -1, &names, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return fail(err, db, "cannot read the schema");
    int found = 0;
    while (!found && (rc = sqlite3_step(names)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(names, 0);
        mmkv_commit_record rec;
        if (!name || mmkv_record_open(&rec, db, schema, name, NULL) != SQLITE_OK) continue;
        if (rec.owner_id == owner) {
            *vtab_name = sqlite3_mprintf("%s", name);
            found = 1;
        }
        mmkv_record_close(&rec);
    }
    sqlite3_finalize(names);
    if (found) return *vtab_name ? SQLITE_OK : SQLITE_NOMEM;
    return rc == SQLITE_DONE ? SQLITE_NOTFOUND : fail(err, db, "cannot read the schema");
}
