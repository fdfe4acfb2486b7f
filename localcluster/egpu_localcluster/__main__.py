"""``python -m egpu_localcluster``: the same as the ``egpu-localcluster`` command."""

import sys

from egpu_localcluster.cli import main

sys.exit(main())
