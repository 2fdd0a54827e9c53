"""``python -m durable_analytics.cli``: the same command as ``python -m durable_analytics``."""

import sys

from . import main

sys.exit(main())
