"""``python -m egpu_node_agent``: the same as the ``egpu-node-agent`` command."""

import sys

from egpu_node_agent.cli import main

sys.exit(main())
