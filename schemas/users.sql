-- The table workflow_runs.user_id refers to.  The plan assumes it exists; it is
-- created only when missing, and never altered.
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY
);
