"""The nightly re-evaluation of the champion and its drift report, as an Argo CronWorkflow (built with hera).

``python pipelines/reevaluate_cron.py`` writes ``pipelines/reevaluate_cron.yaml`` beside this file; a test checks
that the committed YAML is what this writes and that it validates against Argo's CRD. The definition lives in
:mod:`facegate.rollout.cron`; apply it with ``kubectl apply -n <kubeflow namespace> -f reevaluate_cron.yaml``.
"""

from pathlib import Path

from facegate.rollout.cron import reevaluate_cron_yaml

if __name__ == "__main__":
    Path(__file__).with_suffix(".yaml").write_text(reevaluate_cron_yaml())
