"""``python -m workers`` is the ``streamwarden`` command."""

import sys

from workers.cli import main

sys.exit(main())
