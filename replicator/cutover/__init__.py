"""Phases 3 and 4 of the migration plan: the compatibility view, the cutover that moves
the application's writes to ``workflow_runs``, and the rollback that moves them back."""
