# The image every Airflow service runs: the official Airflow image plus this package's pins.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/ct/
RUN pip install --no-cache-dir -r /opt/ct/requirements.txt -c /opt/ct/constraints.txt
ENV PYTHONPATH=/opt/airflow
