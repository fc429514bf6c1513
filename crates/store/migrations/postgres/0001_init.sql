-- lq6 lease store, PostgreSQL schema version 1.
-- Features relied on: bytea, bigserial/sequences, partial indexes, INSERT .. ON CONFLICT DO NOTHING,
-- SELECT .. FOR UPDATE, unnest() of array parameters, the inet type with a GiST exclusion constraint
-- (inet_ops, operator &&) that makes overlapping active addresses/prefixes impossible, and
-- pg_advisory_xact_lock for migrations.
CREATE SEQUENCE lq6_change_seq;

CREATE TABLE lq6_client (
    id            bigserial PRIMARY KEY,
    duid          bytea   NOT NULL,
    link          text    NOT NULL,
    link_address  bytea   NOT NULL,
    cltt          bigint  NOT NULL,
    changed_seq   bigint  NOT NULL,
    changed_at    bigint  NOT NULL,
    n_active      integer NOT NULL,
    n_leases      integer NOT NULL,
    remote_ent    bigint,
    remote_id     bytea,
    data          bytea   NOT NULL,
    CONSTRAINT lq6_client_duid_link UNIQUE (duid, link)
);
CREATE INDEX lq6_client_link ON lq6_client (link, id);
CREATE INDEX lq6_client_remote ON lq6_client (remote_id, remote_ent, id) WHERE remote_id IS NOT NULL;
CREATE INDEX lq6_client_seq ON lq6_client (changed_seq);

CREATE TABLE lq6_relay_id (
    relay_id  bytea  NOT NULL,
    client    bigint NOT NULL REFERENCES lq6_client (id) ON DELETE CASCADE,
    PRIMARY KEY (relay_id, client)
);

-- One row per Active address or delegated prefix.
CREATE TABLE lq6_addr (
    start       bytea    PRIMARY KEY,
    prefix      inet     NOT NULL,
    plen        smallint NOT NULL,
    client      bigint   NOT NULL REFERENCES lq6_client (id) ON DELETE CASCADE,
    expires_at  bigint   NOT NULL,
    CONSTRAINT lq6_addr_no_overlap EXCLUDE USING gist (prefix inet_ops WITH &&)
);
CREATE INDEX lq6_addr_expiry ON lq6_addr (expires_at);
CREATE INDEX lq6_addr_client ON lq6_addr (client);
