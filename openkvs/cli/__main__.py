import sys

from openkvs.cli import main

sys.exit(main())  # pragma: no cover
