-- mmkv demo: `make demo` runs it from the top of the tree as sqlite3 build/demo.db < sql/demo.sql
.load build/mmkv
.headers on
.mode box

SELECT mmkv_version() AS mmkv_version;

-- No arguments: the files go beside the database, named after the table
-- (build/demo.db-kv.mmkv and build/demo.db-kv.mmkv-index).
CREATE VIRTUAL TABLE kv USING mmkv;

-- Keys and values of any type; a key behaves as in a WITHOUT ROWID primary key.
INSERT INTO kv VALUES
  ('alice', 'engineering'),
  ('bob',   'sales'),
  ('carol', 'engineering'),
  (42,      x'cafe'),
  (3.5,     NULL);

-- O(1) lookup through the hash index.
SELECT key, value FROM kv WHERE key = 'alice';
SELECT key, typeof(key) AS key_type, hex(value) AS value_hex FROM kv WHERE key = 42;

-- 42 and 42.0 are the same key, as in SQLite; '42' is not.
SELECT count(*) AS found_as_real FROM kv WHERE key = 42.0;
SELECT count(*) AS found_as_text FROM kv WHERE key = '42';

-- Join with a native table: kv is probed once per row of users.
CREATE TABLE users(name TEXT PRIMARY KEY, age INTEGER);
INSERT INTO users VALUES ('alice', 31), ('bob', 45), ('dave', 27);
SELECT users.name, users.age, kv.value AS department
  FROM users LEFT JOIN kv ON kv.key = users.name
 ORDER BY users.name;

-- Transactions and savepoints behave as on a native table.
BEGIN;
UPDATE kv SET value = 'management' WHERE key = 'bob';
SAVEPOINT before_delete;
DELETE FROM kv WHERE key = 'carol';
ROLLBACK TO before_delete;
COMMIT;
SELECT key, value FROM kv WHERE typeof(key) = 'text' ORDER BY key;

-- The plans: a hash probe for key = ? (INDEX 1), a probe per outer row in the join.
EXPLAIN QUERY PLAN SELECT value FROM kv WHERE key = 'alice';
EXPLAIN QUERY PLAN SELECT * FROM users JOIN kv ON kv.key = users.name;
