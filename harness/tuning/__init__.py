"""MetaSchedule tuning: candidates built on the host, measured by a pluggable runner, records
kept in the farm's database per device class and target and reused by later builds.

:mod:`harness.tuning.search` is the TVM side (run where TVM is imported: the tuning process, the
compile child); :mod:`harness.tuning.store` is the database side (no TVM import).
"""

# The evolutionary search's population: the candidates it evolves (4 generations, each
# scored by the cost model) before it picks a batch to measure. A tuning of 32 trials per
# task in batches of 16 has a cost model trained on a few dozen measurements, which ranks a
# large population little better than a small one, while every generation costs host time
# for each member; the README's figures were measured with 64, and on one conv 256 searched twice
# as long for no faster schedule (README, Tuning). TVM's own default, 512, is meant for
# thousands of trials.
DEFAULT_POPULATION = 64
MAX_POPULATION = 4096  # a farm tuning's or a suite's (each generation scores every member)

# A tuning's confirmation (harness.tuning.confirm): per workload, the records measured fastest
# timed again besides the one a build applies now, in this many interleaved rounds. Here, not
# in confirm.py, so that the CLI's defaults do not import the database.
DEFAULT_CONFIRM_TOP = 4
DEFAULT_CONFIRM_ROUNDS = 3
