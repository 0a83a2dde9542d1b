from .._common import run_example
from .workflows import main

run_example(main, "Training-session patterns (seed 004): batches, streaming, compensation, circuit breaker, "
                  "bounded concurrency")
