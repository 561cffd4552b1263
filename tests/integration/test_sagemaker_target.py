"""The SageMaker deployment target against moto_server.

SageMaker itself cannot exist here: moto stands in for it, over real HTTP, through the amazon
provider's SageMakerHook and the same Airflow connection as S3. moto 5.2.5 implements create_model,
create_endpoint_config, create_endpoint and the describe calls, but not update_endpoint, so only a
first deployment is exercised. Nothing here has run against real AWS.
"""

from __future__ import annotations

import dataclasses
import uuid

from airflow.providers.amazon.aws.hooks.sagemaker import SageMakerHook

from include.continuous_training.deployment import SageMakerEndpoint, target_for


def test_first_deployment_creates_model_config_and_endpoint(settings):
    scoped = dataclasses.replace(settings, model_name=f"sm-{uuid.uuid4().hex[:8]}", deployment_target="sagemaker")
    target = SageMakerEndpoint(
        scoped,
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:3.0-1",
        role_arn="arn:aws:iam::123456789012:role/sagemaker-execution",
        model_data_url=f"s3://{settings.s3_bucket}/sagemaker/{scoped.model_name}/model.tar.gz",
    )
    assert target.serving_version() is None

    target.deploy("3")

    assert target.serving_version() == "3"
    # Read back through the same hook and connection the target uses, not through the target itself.
    client = SageMakerHook(aws_conn_id=settings.aws_conn_id).get_conn()
    endpoint = client.describe_endpoint(EndpointName=target.endpoint_name)
    config = client.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["ProductionVariants"][0]["ModelName"] == f"{scoped.model_name}-v3"
    model = client.describe_model(ModelName=f"{scoped.model_name}-v3")
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith("model.tar.gz")


def test_the_target_follows_the_setting(settings):
    assert (
        type(target_for(dataclasses.replace(settings, deployment_target="sagemaker"))).__name__ == "SageMakerEndpoint"
    )
    assert type(target_for(dataclasses.replace(settings, deployment_target="local"))).__name__ == "LocalEndpoint"
