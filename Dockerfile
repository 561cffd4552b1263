# The image every Airflow service, the MLflow server and the serving endpoint run: the official
# Airflow image plus this package's pins, with the package baked in (compose also mounts the
# folders for live edits; Kubernetes runs the image as is).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/ct/
RUN pip install --no-cache-dir -r /opt/ct/requirements.txt -c /opt/ct/constraints.txt
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 include /opt/airflow/include
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 models /opt/airflow/models
COPY --chown=airflow:0 airflow_settings.yaml /opt/airflow/airflow_settings.yaml
ENV PYTHONPATH=/opt/airflow
