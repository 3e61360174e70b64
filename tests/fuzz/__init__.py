"""Coverage-guided fuzz targets, one per parser, run by ``scripts/fuzz`` (atheris / cargo-fuzz).

They live under ``tests/`` rather than ``scripts/fuzz/`` because ``scripts/fuzz`` is the
command, and because they share the test suite's helpers (the pcap reader, the NetFlow packet
builders, the corpus location). File names do not start with ``test_``, so pytest does not
collect them; ``tests/test_fuzz_targets.py`` replays every target's seeds through it once so
a broken harness fails the ordinary suite, not only the fuzz run.
"""
