"""``python -m replicator``: the command line."""

import sys

from replicator.cli.main import main

sys.exit(main())
