from .._common import run_example
from .workflows import main

run_example(main, "iWF parent-child patterns (seed 000): completion by signal, and M:N waits")
