"""Airflow Assets shared between DAGs (the producer and the consumers must use the same object)."""

from __future__ import annotations

from airflow.sdk import Asset

from include.continuous_training.config import Settings
from include.continuous_training.model_files import ModelFile


def curated_batches_asset(model: ModelFile, settings: Settings) -> Asset:
    """Updated by ``model``'s ``ingest_new_data`` once per curated batch; its ``train_and_deploy`` schedules on it.

    Each event's ``extra`` carries ``batch_id``, ``rows``, ``bad_rows``, ``uri`` and ``source_key``.

    The Asset is identified by name, and its S3 location is in ``extra``: an ``s3://`` URI makes
    Airflow load the amazon provider's URI normaliser (and boto3) in every parse of both DAG files
    (the parse rows of ``make bench`` show the cost).
    """
    return Asset(name=model.asset_name, extra={"location": settings.s3_uri(settings.curated_prefix)})
