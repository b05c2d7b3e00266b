"""What the benchmarks and the end-to-end tests share: a real county-server process on loopback
(:mod:`bench.harness.county_server`) and the user-space fault proxy (:mod:`bench.harness.faultproxy`).
A package of its own, so ``python -m bench`` does not take these for benchmarks."""
