/*
** Which mmkv_connection serves a sqlite3 connection. See connections.h.
*/
#include "connections.h"

#include <pthread.h>

SQLITE_EXTENSION_INIT3

typedef struct listed listed;
struct listed {
    listed *next;
    mmkv_connection *connection;
};

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static listed *list; /* newest first */

int mmkv_connections_add(mmkv_connection *c)
{
    listed *l = sqlite3_malloc(sizeof *l);
    if (!l) return SQLITE_NOMEM;
    l->connection = c;
    pthread_mutex_lock(&list_lock);
    l->next = list;
    list = l;
    pthread_mutex_unlock(&list_lock);
    return SQLITE_OK;
}

void mmkv_connections_remove(mmkv_connection *c)
{
    pthread_mutex_lock(&list_lock);
    listed **p = &list;
    while (*p && (*p)->connection != c)
        p = &(*p)->next;
    listed *gone = *p;
    if (gone) *p = gone->next;
    pthread_mutex_unlock(&list_lock);
    sqlite3_free(gone);
}

mmkv_connection *mmkv_connections_find(sqlite3 *db)
{
    mmkv_connection *found = NULL;
    pthread_mutex_lock(&list_lock);
    for (listed *l = list; l && !found; l = l->next)
        if (l->connection->db == db) found = l->connection;
    pthread_mutex_unlock(&list_lock);
    return found;
}
