"""Run ``python -m pipelines.cli ARGS`` in this process and print its peak RSS (``MAXRSS <kB>``) at exit."""

import resource
import runpy
import sys

sys.argv = ["copgen", *sys.argv[1:]]
try:
    runpy.run_module("pipelines.cli", run_name="__main__")
except SystemExit:
    pass
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
