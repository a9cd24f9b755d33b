"""``python -m facegate.dashboards``: write (or ``--check``) the chart's dashboard JSON files."""

from facegate.dashboards.build import main

raise SystemExit(main())
