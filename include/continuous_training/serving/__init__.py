"""The serving endpoint: the ``champion`` model over HTTP, with an inference log in S3.

Run it alone with ``python -m include.continuous_training.serving`` (the services launcher starts it
next to S3 and MLflow). See :mod:`.app` for the routes.
"""
