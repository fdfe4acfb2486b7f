"""``python -m egpu_operator``: the same as the ``egpu-operator`` command."""

import sys

from egpu_operator.cli import main

sys.exit(main())
