import sys

from sktransfer.cli import main

sys.exit(main())
