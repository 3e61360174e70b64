-- The last rollup write the flow path committed, moved in the same transaction as its rows.
-- Between taking a closed minute from memory and committing it, the flow path holds its rows
-- as pending; a reader of "top" reads this mark in the statement that sums the stored rows,
-- so it knows which pending writes that snapshot holds already and adds only the others:
-- each row is counted once, whenever the reader comes.
CREATE TABLE flow_rollup_writes (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    mark INTEGER NOT NULL
);
INSERT INTO flow_rollup_writes (id, mark) VALUES (1, 0);
