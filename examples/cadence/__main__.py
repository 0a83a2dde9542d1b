from .._common import run_example
from .workflows import main

run_example(main, "Cadence patterns (seed 001): chunked job, fan-out, fan-in, map-reduce, scatter-gather, hierarchy")
