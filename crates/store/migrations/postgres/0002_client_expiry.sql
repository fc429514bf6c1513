-- lq6 schema 2: a renewal updates its address rows in place.
--
-- A renewal only moves a lease's expiry. With an index on lq6_addr.expires_at, every such change
-- is a non-HOT update (or, as before, a delete and an insert): a new entry in each of the table's
-- indexes and a search of the exclusion constraint's GiST index. Measured with pgbench on one
-- row: 3.4k/s as delete+insert, 6.2k/s as a non-HOT update, 20.8k/s as a HOT update. So the expiry
-- index moves to the client row, which every commit rewrites anyway (its change sequence is
-- indexed), and address pages keep room for the new row versions.

ALTER TABLE lq6_client ADD COLUMN next_expiry bigint;
UPDATE lq6_client c SET next_expiry = a.m
  FROM (SELECT client, min(expires_at) AS m FROM lq6_addr GROUP BY client) a
 WHERE a.client = c.id;
CREATE INDEX lq6_client_expiry ON lq6_client (next_expiry) WHERE next_expiry IS NOT NULL;
DROP INDEX lq6_addr_expiry;
ALTER TABLE lq6_addr SET (fillfactor = 80);
