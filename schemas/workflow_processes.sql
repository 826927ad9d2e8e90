-- The legacy source table, as the migration plan describes it (PostgreSQL dialect).
CREATE TABLE IF NOT EXISTS workflow_processes (
    id TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL,
    message TEXT NOT NULL,
    max_turns INTEGER DEFAULT 30,
    session_name TEXT,
    git_branch TEXT,
    repository_url TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    status TEXT DEFAULT 'pending',
    result TEXT,
    error_message TEXT,
    execution_time INTEGER,
    total_cost REAL,
    started_at TIMESTAMP,
    completed_at TIMESTAMP
);
