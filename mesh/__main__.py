"""`python -m mesh`: meshctl (mesh/ctl)."""

import sys

from mesh.ctl.__main__ import main

sys.exit(main())
