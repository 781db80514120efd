import sys

from mesh.runner.cli import main

sys.exit(main())
