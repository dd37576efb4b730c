"""``python -m workers``: the ``explainer`` command."""

import sys

from workers.cli import main

sys.exit(main())
