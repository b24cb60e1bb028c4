"""``python -m hacache.topology``: runs the command line (see ``hacache.topology.cli``).

Nothing else happens here, so importing the package never runs a command.
"""

import sys

from hacache.topology.cli import main

sys.exit(main())
