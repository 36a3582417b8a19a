"""Imported first by every bench, before torch loads: the OpenMP wait policy that the CLI and
the service run under (``OMP_WAIT_POLICY=PASSIVE`` unless set; see :mod:`captioner._threads`),
so that the figures are those of the programs. ``bench/omp_wait.py`` measures both policies."""

from captioner._threads import prefer_passive_wait

prefer_passive_wait()
