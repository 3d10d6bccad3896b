"""stylecast's benchmarks: ``bench/run`` / ``python -m bench`` runs them all (see :mod:`bench.suite`)."""
