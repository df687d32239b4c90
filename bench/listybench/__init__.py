"""Listy's side-by-side benchmark (``bench/run.sh``, ``make bench``)."""
