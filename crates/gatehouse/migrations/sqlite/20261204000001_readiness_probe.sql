-- /readyz proves that the database can still write, not only read: a full
-- disk or a read-only file lets every read through while every write fails.
-- One row, rewritten by each probe (a page of WAL).
CREATE TABLE readiness_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
