-- The search index (see store/segindex.py): one Bloom filter per event segment, of the tokens
-- its fields' values hold and the trigrams of its messages, so a search for a rare value or a
-- text skips the segments that cannot hold it without reading their blobs. Written in the
-- segment's own transaction and deleted with it; a segment without a row here (stored before
-- this migration, or by the Python reference) is scanned as before, so nothing is rebuilt.
CREATE TABLE event_index (
    first_id INTEGER PRIMARY KEY,  -- the segment's first_id
    bloom    BLOB NOT NULL
);
