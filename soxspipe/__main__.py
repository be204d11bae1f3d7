"""``python -m soxspipe``: the same as the ``soxspipe`` command."""

import sys

from .cl_utils import main

sys.exit(main())
