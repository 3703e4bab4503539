-- Each readiness probe must write a page. SQLite skips writing a row whose
-- new content equals the old, so two probes within the same second wrote
-- nothing and a read-only file still looked writable. A count changes on
-- every probe.
ALTER TABLE readiness_probe ADD COLUMN probes INTEGER NOT NULL DEFAULT 0;
