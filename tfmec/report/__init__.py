"""The report of ``tfmec run``: ``DIR/report.md`` with the results table and PNG figures (AUC against
embedding bytes, MEC code usage of head vs tail ids, AFM eigenvalue spectra, training curves).

:func:`write_report` is called by :func:`tfmec.experiment.run_experiment`; it can also be run again on a
saved ``metrics.json``::

    import json, tfmec.report
    tfmec.report.write_report(json.load(open("runs/demo/metrics.json")), "runs/demo")
"""
from tfmec.report.figures import FIGURES, NoData, training_history
from tfmec.report.markdown import REPORT_FILE, results_table, write_report

__all__ = ["write_report", "results_table", "FIGURES", "NoData", "training_history", "REPORT_FILE"]
