"""``python -m service``: the HTTP service's command (what ``captioner serve`` runs)."""

import sys

from service.serve import main

sys.exit(main())
