"""``python -m benchmarks``: run the whole suite and write benchmarks/RESULTS.md."""

from benchmarks.run import main

raise SystemExit(main())
