"""The report of ``tfmec run``: ``DIR/report.md`` with the results table and PNG figures (AUC against
embedding bytes, MEC code usage of head vs tail ids, AFM eigenvalue spectra, training curves).

:func:`write_report` is called by :func:`tfmec.experiment.run_experiment`; it can also be run again on a
saved ``metrics.json``::

    import json, tfmec.report
    tfmec.report.write_report(json.load(open("runs/demo/metrics.json")), "runs/demo")
"""
from tfmec.api_export import public_names
from tfmec.report import figures, markdown

# every name exported as tfmec.report.* by the modules above (@tfmec_export, export_value)
__all__ = public_names(globals(), figures, markdown)
