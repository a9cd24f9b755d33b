"""Grafana dashboards of the verifier, generated from code.

- :mod:`facegate.dashboards.panels`: the panels and their PromQL, as plain data (no Grafana library);
- :mod:`facegate.dashboards.build`: Grafana JSON through grafana-foundation-sdk (the ``dashboards`` extra), and
  ``python -m facegate.dashboards`` writing the chart's ConfigMap sources.
"""
