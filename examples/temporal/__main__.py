from .._common import run_example
from .workflows import main

run_example(main, "Temporal child-workflow patterns (seed 002): sync, async, parallel, fire-and-forget, conditional")
