import sys

from prs.cli import main

sys.exit(main())
