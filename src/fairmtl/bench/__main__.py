"""``python -m fairmtl.bench <command>``: the same as the ``fairmtl`` command."""

from fairmtl.bench.cli import main

raise SystemExit(main())
