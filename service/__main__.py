"""``python -m service``: the HTTP service's command (what ``captioner serve`` runs).

The process ends with ``os._exit`` once the server has shut down and the logs are flushed:
everything worth finishing (requests in flight, the batchers) is finished by then, and the
interpreter's own teardown of torch and the models takes a second or more for nothing.
"""

import logging
import os
import sys

from service.serve import main

code = main()
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
