-- lq6 schema 3: the overlap constraint on lq6_addr uses SP-GiST instead of GiST.
--
-- Same rule (no two rows whose prefixes overlap, `inet_ops WITH &&`), same constraint name, so a
-- schema-2 server that is already running keeps working beside one that migrated (one started
-- afterwards refuses the newer schema until it is upgraded too). Every inserted row
-- searches this index, and the GiST inet opclass does badly with many addresses that share a long
-- prefix, which is what a pool is: inserting 100,000 addresses of one /64 took 9.4-10.0 s under
-- GiST and 1.46 s under SP-GiST (a radix tree over the address bits) on the same machine.
-- `>>=` lookups by address use the new index too.
--
-- Runs in the migration's transaction: the table is locked while the index is built, and no other
-- session ever sees it without the constraint.

ALTER TABLE lq6_addr DROP CONSTRAINT lq6_addr_no_overlap;
ALTER TABLE lq6_addr ADD CONSTRAINT lq6_addr_no_overlap EXCLUDE USING spgist (prefix inet_ops WITH &&);
