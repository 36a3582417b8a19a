"""The HTTP service around the captioner library: settings, routes, dynamic batcher and page.

Importing the package sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it, before any of
its modules loads torch (see :mod:`captioner._threads`): every way the service starts
(``python -m service``, ``captioner serve``, ``uvicorn service.app:create_app --factory``)
imports this file first.
"""

from captioner._threads import prefer_passive_wait

prefer_passive_wait()
