"""The ``replicator`` command line: one module per command group, each adding its own
part of the parser and calling one function of the package (``main`` composes them)."""
