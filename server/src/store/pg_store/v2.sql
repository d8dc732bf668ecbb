-- Version 2: the lease of the hub replicas sharing this database. The
-- leader (the hub holding the lease's advisory lock) raises the epoch as
-- it takes over; every write checks, in its own transaction, that the
-- epoch is still the one its hub took over with, so that a replica that
-- lost the lease never writes again.
CREATE TABLE lease (
    id smallint PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL
);
INSERT INTO lease (id, epoch) VALUES (1, 0);
