"""The local stack for the demo, the tests and the benchmarks; not shipped to users' Airflow.

Everything here runs on a developer's machine or in CI, beside the package that goes into a user's
Airflow (``dags/``, ``include/``, ``plugins/``), which never imports it:

- :mod:`devtools.services`: the loopback launcher (moto_server, MLflow server, serving endpoint);
  ``start_endpoint`` is the one way an endpoint process is started.
- :mod:`devtools.stack`: the services plus ``airflow standalone``, and the waits the demo, the tests
  and the benchmarks share (a DAG run, a new run, the ingest sensor listening).
- :mod:`devtools.airflow_api`: the few calls of Airflow's REST API the stack needs.
- :mod:`devtools.processes`: process groups: start one, stop it, leave nothing behind.
- :mod:`devtools.demo`: ``make demo``, the whole loop as a scenario with a summary.
- :mod:`devtools.datasets` and :mod:`devtools.traffic`: the synthetic data and traffic generators.
"""
