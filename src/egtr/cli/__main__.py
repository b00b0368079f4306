"""`python -m egtr.cli ...` is `egtr ...`."""

import sys

from egtr.cli import main

sys.exit(main())
