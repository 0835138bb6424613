import sys

from sloserve.sim.cli import main

sys.exit(main())
