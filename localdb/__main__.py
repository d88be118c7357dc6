"""``python -m localdb {start,stop,status,url,check-url,bin}`` (see the package docstring)."""

import sys

from localdb import main

sys.exit(main())
