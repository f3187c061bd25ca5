"""``python -m mcpgov``: the same CLI as the ``mcpgov`` console script."""

import sys

from mcpgov.cli import main

sys.exit(main())
