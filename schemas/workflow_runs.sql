-- The target table and its nine indexes, exactly as the migration plan has them,
-- in PostgreSQL dialect.  {table} is the target table's name (workflow_runs, or a
-- shadow table during a replay); the replicator substitutes it as a quoted identifier.
CREATE TABLE IF NOT EXISTS {table} (
    run_id TEXT PRIMARY KEY,
    workflow_type TEXT NOT NULL,
    description TEXT NOT NULL,
    user_id TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    priority TEXT DEFAULT 'normal',

    -- Configuration
    max_turns INTEGER DEFAULT 30,
    session_id TEXT,
    git_branch TEXT,
    repository_url TEXT,

    -- Timing
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    started_at TIMESTAMP,
    completed_at TIMESTAMP,

    -- Results and Performance
    result_data JSON,
    error_details JSON,
    execution_time_ms INTEGER,
    total_cost DECIMAL(10,4),

    -- Enhanced Features
    tags JSON DEFAULT '[]',
    metadata JSON DEFAULT '{}',
    progress_data JSON DEFAULT '{}',
    resource_usage JSON DEFAULT '{}',

    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE SET NULL
);

-- Performance Indexes
CREATE INDEX IF NOT EXISTS {index_prefix}_status ON {table}(status);
CREATE INDEX IF NOT EXISTS {index_prefix}_workflow_type ON {table}(workflow_type);
CREATE INDEX IF NOT EXISTS {index_prefix}_user_id ON {table}(user_id);
CREATE INDEX IF NOT EXISTS {index_prefix}_created_at ON {table}(created_at);
CREATE INDEX IF NOT EXISTS {index_prefix}_completed_at ON {table}(completed_at);
CREATE INDEX IF NOT EXISTS {index_prefix}_priority ON {table}(priority);

-- Composite Indexes for Analytics
CREATE INDEX IF NOT EXISTS {index_prefix}_type_status ON {table}(workflow_type, status);
CREATE INDEX IF NOT EXISTS {index_prefix}_user_status ON {table}(user_id, status);
CREATE INDEX IF NOT EXISTS {index_prefix}_date_range ON {table}(created_at, completed_at);
