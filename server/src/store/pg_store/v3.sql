-- Version 3: the access log of every origin (the hub's own, or each
-- replica's), so that a replica's record of the calls it served outlives
-- its host and any replica reads every one (store/access.rs). Records are
-- kept as the lines their leaf hashes are over; the tree's stored hashes
-- stay when retention removes records.
CREATE TABLE access_origin (
    origin text PRIMARY KEY
);
CREATE TABLE access_record (
    origin text NOT NULL,
    n bigint NOT NULL,
    at_micros bigint NOT NULL,
    line bytea NOT NULL,
    PRIMARY KEY (origin, n)
);
CREATE TABLE access_hash (
    origin text NOT NULL,
    idx bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (origin, idx)
);
-- The latest signed checkpoint of each origin (a C2SP signed note).
CREATE TABLE access_checkpoint (
    origin text PRIMARY KEY,
    note text NOT NULL
);
