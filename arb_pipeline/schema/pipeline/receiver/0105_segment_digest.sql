-- What each frame of a complete's segmented table files staged to on this receiver
-- (load/segments.py): keyed by the frame's sha256 and the columns and receiver types its
-- rows were summed over, their count and summed row hash. A later complete's frame with
-- the same sha256 is not staged when the table's rows in its key range add up to the same.
-- Pruned to the newest complete's frames by each complete's load.
CREATE TABLE IF NOT EXISTS arb_segment_digest (
    sha256 text NOT NULL,
    columns text NOT NULL,
    rows bigint NOT NULL,
    hash_sum numeric NOT NULL,
    backup_id text NOT NULL,  -- the newest complete that held this frame
    PRIMARY KEY (sha256, columns)
);
