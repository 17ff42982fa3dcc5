"""template.yaml as the one truth: read it, and make its resources on any AWS endpoint.

The local stack and the tests both build the bucket, table, queues and secrets from the
template's own properties (nothing repeated by hand) and give each function the
environment the template gives it, with `Ref`/`GetAtt`/`Sub`/`If` resolved to what was
made. Only what videohook's template uses is interpreted.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
NO_VALUE = object()


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short tags as their long forms."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """A fresh copy of the parsed template (parsed once per process: YAML is slow)."""
    return copy.deepcopy(_parse(path))


@lru_cache(maxsize=4)
def _parse(path: Path) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.load(handle, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class Stack:
    """The template, its parameter values, and what was made for each resource."""

    template: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)
    physical: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"

    @classmethod
    def from_file(cls, parameters: dict[str, str] | None = None, path: Path = TEMPLATE_PATH) -> Stack:
        template = load_template(path)
        values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
        values.update(parameters or {})
        return cls(template=template, parameters=values)

    @property
    def resources(self) -> dict[str, Any]:
        return self.template["Resources"]

    def of_type(self, kind: str) -> list[str]:
        return [name for name, spec in self.resources.items() if spec["Type"] == kind]

    # --- intrinsic functions -----------------------------------------------------------

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def active(self, name: str) -> bool:
        condition = self.resources[name].get("Condition")
        return condition is None or self.condition(condition)

    def _ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::Partition": "aws",
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical[name]

    def resolve(self, value: Any) -> Any:
        """Evaluate the intrinsic functions the template uses against what was made."""
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                return self.attributes[(arg[0], arg[1])]
            if key == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::Equals":
                return self.resolve(arg[0]) == self.resolve(arg[1])
            if key == "Fn::Sub":
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(self._sub(m.group(1))), arg)
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not NO_VALUE}

    def _sub(self, name: str) -> Any:
        if "." in name and not name.startswith("AWS::"):
            logical, attribute = name.split(".", 1)
            return self.attributes[(logical, attribute)]
        return self._ref(name)

    # --- functions -----------------------------------------------------------------------

    def functions(self) -> list[str]:
        return self.of_type("AWS::Serverless::Function")

    def function_spec(self, name: str) -> dict[str, Any]:
        """A function's properties merged over the template's Globals."""
        merged = dict(self.template.get("Globals", {}).get("Function", {}))
        own = self.resources[name]["Properties"]
        merged.update({k: v for k, v in own.items() if k != "Environment"})
        variables = dict(merged.get("Environment", {}).get("Variables", {}))
        variables.update(own.get("Environment", {}).get("Variables", {}))
        merged["Environment"] = {"Variables": variables}
        return merged

    def function_environment(self, name: str) -> dict[str, str]:
        variables = self.resolve(self.function_spec(name)["Environment"]["Variables"])
        return {key: str(value) for key, value in variables.items()}

    def function_handler(self, name: str) -> str:
        return self.function_spec(name)["Handler"]

    def sqs_event(self, name: str) -> dict[str, Any]:
        """The properties of a function's SQS event source (batch size, response types)."""
        for event in self.function_spec(name).get("Events", {}).values():
            if event["Type"] == "SQS":
                return self.resolve(event["Properties"])
        raise KeyError(f"{name} has no SQS event")

    def queue_name_of(self, queue_url: str) -> str:
        for logical, url in self.physical.items():
            if url == queue_url:
                return logical
        raise KeyError(queue_url)

    # --- making the resources --------------------------------------------------------------

    def create(self, session: Any, prefix: str = "videohook") -> Stack:
        """Make every supported resource with the template's properties on `session`'s endpoint."""
        for name in self.of_type("AWS::SecretsManager::Secret"):
            if self.active(name):
                self._create_secret(session.client("secretsmanager"), prefix, name)
        for name in self.of_type("AWS::S3::Bucket"):
            self._create_bucket(session.client("s3"), prefix, name)
        for name in self.of_type("AWS::DynamoDB::Table"):
            self._create_table(session.client("dynamodb"), prefix, name)
        for name in self.of_type("AWS::SNS::Topic"):
            self._create_topic(session.client("sns"), prefix, name)
        queues = self.of_type("AWS::SQS::Queue")
        # Dead-letter queues first: the others' redrive policies name them.
        queues.sort(key=lambda q: "RedrivePolicy" in self.resources[q]["Properties"])
        for name in queues:
            self._create_queue(session.client("sqs"), prefix, name)
        return self

    def _create_secret(self, client: Any, prefix: str, name: str) -> None:
        props = self.resources[name]["Properties"]
        if "GenerateSecretString" in props:
            value = secrets.token_urlsafe(36)
        else:
            value = str(self.resolve(props["SecretString"]))
        arn = client.create_secret(Name=f"{prefix}-{name}", SecretString=value)["ARN"]
        self.physical[name] = arn

    def _create_bucket(self, client: Any, prefix: str, name: str) -> None:
        props = self.resolve(self.resources[name].get("Properties", {}))
        bucket = f"{prefix}-{name}".lower()
        client.create_bucket(Bucket=bucket)
        if "VersioningConfiguration" in props:
            client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration=props["VersioningConfiguration"]
            )
        if "BucketEncryption" in props:
            client.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [
                        {
                            "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                            "BucketKeyEnabled": rule.get("BucketKeyEnabled", False),
                        }
                        for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
                    ]
                },
            )
        if "PublicAccessBlockConfiguration" in props:
            client.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if "LifecycleConfiguration" in props:
            rules = [
                {
                    "ID": rule["Id"],
                    "Status": rule["Status"],
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": rule["AbortIncompleteMultipartUpload"],
                }
                for rule in props["LifecycleConfiguration"]["Rules"]
            ]
            client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        self.physical[name] = bucket
        self.attributes[(name, "Arn")] = f"arn:aws:s3:::{bucket}"

    def _create_table(self, client: Any, prefix: str, name: str) -> None:
        props = self.resolve(self.resources[name]["Properties"])
        table = f"{prefix}-{name}"
        kwargs = {
            "TableName": table,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if props.get("StreamSpecification"):
            view = props["StreamSpecification"]["StreamViewType"]
            kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
        description = client.create_table(**kwargs)["TableDescription"]
        self.physical[name] = table
        self.attributes[(name, "Arn")] = description["TableArn"]
        if "LatestStreamArn" in description:
            self.attributes[(name, "StreamArn")] = description["LatestStreamArn"]

    def _create_topic(self, client: Any, prefix: str, name: str) -> None:
        """A topic (the alarm topic); alarms are not made locally, so nothing publishes to it."""
        arn = client.create_topic(Name=f"{prefix}-{name}")["TopicArn"]
        self.physical[name] = arn
        self.attributes[(name, "TopicArn")] = arn
        self.attributes[(name, "TopicName")] = f"{prefix}-{name}"

    def _create_queue(self, client: Any, prefix: str, name: str) -> None:
        props = self.resolve(self.resources[name].get("Properties", {}))
        attributes = {
            key: str(props[key]) for key in ("VisibilityTimeout", "MessageRetentionPeriod") if key in props
        }
        if "RedrivePolicy" in props:
            policy = props["RedrivePolicy"]
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": policy["deadLetterTargetArn"],
                    "maxReceiveCount": int(policy["maxReceiveCount"]),
                }
            )
        queue_name = f"{prefix}-{name}"
        url = client.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.physical[name] = url
        self.attributes[(name, "Arn")] = arn
        self.attributes[(name, "QueueName")] = queue_name
