"""MetaSchedule tuning: candidates built on the host, measured by a pluggable runner, records
kept in the farm's database per device class and target and reused by later builds.

:mod:`harness.tuning.search` is the TVM side (run where TVM is imported: the tuning process, the
compile child); :mod:`harness.tuning.store` is the database side (no TVM import).
"""
