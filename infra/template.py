"""template.yaml as the one truth: read it, and make its resources on any AWS endpoint.

The local stack and the tests both build the bucket, table, queues and secrets from the
template's own properties (nothing repeated by hand) and give each function the
environment the template gives it, with the intrinsic functions resolved to what was made.

- Reading: cfn-lint's decoder (the parser `cfn-lint` itself uses, short tags included); a
  template it cannot parse fails with cfn-lint's own messages.
- `Globals`: merged by aws-sam-translator's own `Globals` class, so exactly as `sam build`
  and CloudFormation's transform merge them (maps merged, lists appended, intrinsics taken
  whole, `Architectures` replaced, `IgnoreGlobals` honoured).
- Making: every property of every resource the stack makes is either applied on the
  endpoint or refused with `NotApplicable` naming the resource and the property; nothing is
  dropped silently. A resource type the local stack does not make is listed in `NOT_MADE`
  with the reason; any other type is refused. The one thing the local endpoint knowingly
  goes without (a bucket policy's deny on plain-HTTP requests: the local endpoint is plain
  HTTP) is logged as a warning and listed in `Stack.not_applied`.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cfnlint.decode import decode
from samtranslator.plugins.globals.globals import Globals

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = ROOT / "template.yaml"
NO_VALUE = object()
SERVERLESS_PREFIX = "AWS::Serverless::"

log = logging.getLogger(__name__)


class TemplateError(ValueError):
    """The template cannot be read, or uses something this reader does not interpret."""


class NotApplicable(TemplateError):
    """A resource property that cannot be applied on the endpoint the stack is made on."""

    def __init__(self, resource: str, kind: str, prop: str, why: str = "") -> None:
        self.resource, self.kind, self.prop = resource, kind, prop
        reason = f" ({why})" if why else ""
        super().__init__(
            f"{resource} ({kind}): property {prop} cannot be applied on the local AWS endpoint{reason}; "
            "apply it in infra/template.py or change the template"
        )


#: Resource types the local stack does not make on the AWS endpoint, and why.
NOT_MADE: dict[str, str] = {
    "AWS::Serverless::Function": "run in-process by the local stack (infra/local)",
    "AWS::Serverless::Api": "served by the local HTTP API (infra/local/api.py)",
    "AWS::Serverless::LayerVersion": "the local stack imports the dependencies from the development venv",
    "AWS::Lambda::Permission": "the local stack calls the functions itself",
    "AWS::IAM::Role": "the local stack does not check IAM",
    "AWS::IAM::Policy": "the local stack does not check IAM",
    "AWS::IAM::ManagedPolicy": "the local stack does not check IAM",
    "AWS::Logs::LogGroup": "the local stack logs to its own output",
    "AWS::CloudWatch::Alarm": "no CloudWatch metrics locally",
    "AWS::CloudWatch::Dashboard": "no CloudWatch metrics locally",
    "AWS::SNS::Subscription": "receives only alarms, which the local stack has none of",
    "AWS::SNS::TopicPolicy": "receives only alarms, which the local stack has none of",
}


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    """A fresh copy of the parsed template (parsed once per process)."""
    return copy.deepcopy(_parse(path))


@lru_cache(maxsize=4)
def _parse(path: Path) -> dict[str, Any]:
    template, matches = decode(str(path))
    if matches or template is None:
        raise TemplateError(f"{path}: " + "; ".join(str(match) for match in matches))
    # cfn-lint's nodes carry their source marks; plain JSON types are all the reader needs.
    plain: dict[str, Any] = json.loads(json.dumps(template))
    return plain


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)).startswith(("Ref", "Fn::"))


class _Properties:
    """A resource's resolved properties; each one read is counted as applied.

    `finish()` refuses whatever was not read, naming the resource and the property.
    """

    def __init__(self, resource: str, kind: str, values: dict[str, Any], path: str = "") -> None:
        self.resource, self.kind, self.path = resource, kind, path
        self.values = values
        self.unread = set(values)

    def has(self, key: str) -> bool:
        return key in self.values

    def take(self, key: str, default: Any = None) -> Any:
        self.unread.discard(key)
        return self.values.get(key, default)

    def nested(self, key: str, index: int | None = None) -> _Properties:
        """The mapping under `key` (or its `index`-th item), read property by property too."""
        value = self.take(key) if index is None else self.values[key][index]
        where = f"{self.path}{key}" + ("" if index is None else f"[{index}]")
        if not isinstance(value, dict):
            raise NotApplicable(self.resource, self.kind, where, "expected a mapping")
        return _Properties(self.resource, self.kind, value, f"{where}.")

    def refuse(self, key: str, why: str) -> NotApplicable:
        return NotApplicable(self.resource, self.kind, f"{self.path}{key}", why)

    def finish(self) -> None:
        if self.unread:
            raise self.refuse(sorted(self.unread)[0], "not interpreted by the template reader")


@dataclass
class Stack:
    """The template, its parameter values, and what was made for each resource."""

    template: dict[str, Any]
    parameters: dict[str, str] = field(default_factory=dict)
    physical: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"
    stack_name: str = "videohook"
    #: What the endpoint knowingly went without, in words (also logged as warnings).
    not_applied: list[str] = field(default_factory=list)
    _globals: Globals | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_file(cls, parameters: dict[str, str] | None = None, path: Path = TEMPLATE_PATH) -> Stack:
        template = load_template(path)
        values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
        values.update(parameters or {})
        return cls(template=template, parameters=values)

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template["Resources"]
        return resources

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
            "AWS::StackName": self.stack_name,
        }
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self.physical[name]

    def resolve(self, value: Any) -> Any:
        """Evaluate the intrinsic functions against what was made.

        A `Ref`/`GetAtt` to something not made raises KeyError; an intrinsic function this
        reader does not interpret raises TemplateError.
        """
        if isinstance(value, list):
            return [item for item in (self.resolve(v) for v in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if _is_intrinsic(value):
            ((key, arg),) = value.items()
            return self._intrinsic(key, arg)
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not NO_VALUE}

    def _intrinsic(self, key: str, arg: Any) -> Any:
        if key == "Ref":
            return self._ref(arg)
        if key == "Fn::GetAtt":
            logical, attribute = arg.split(".", 1) if isinstance(arg, str) else arg
            return self.attributes[(logical, attribute)]
        if key == "Fn::If":
            return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(item) for item in arg)
        if key == "Fn::Or":
            return any(self.resolve(item) for item in arg)
        if key == "Fn::Equals":
            return self.resolve(arg[0]) == self.resolve(arg[1])
        if key == "Fn::Join":
            return str(arg[0]).join(str(item) for item in self.resolve(arg[1]))
        if key == "Fn::Select":
            return self.resolve(arg[1])[int(self.resolve(arg[0]))]
        if key == "Fn::Split":
            return str(self.resolve(arg[1])).split(arg[0])
        if key == "Fn::Sub":
            text, names = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
            return re.sub(
                r"\$\{([^}!]+)\}",
                lambda m: str(names[m.group(1)] if m.group(1) in names else self._sub(m.group(1))),
                text,
            )
        raise TemplateError(f"the template reader does not interpret {key}")

    def _sub(self, name: str) -> Any:
        if "." in name and not name.startswith("AWS::"):
            logical, attribute = name.split(".", 1)
            return self.attributes[(logical, attribute)]
        return self._ref(name)

    # --- SAM resources -------------------------------------------------------------------

    def properties(self, name: str) -> dict[str, Any]:
        """A resource's properties; for a SAM resource, merged over `Globals` as SAM merges them."""
        resource = self.resources[name]
        own = copy.deepcopy(resource.get("Properties", {}))
        if not resource["Type"].startswith(SERVERLESS_PREFIX) or "Globals" not in self.template:
            return own
        if self._globals is None:
            self._globals = Globals(copy.deepcopy(self.template))
        merged = self._globals.merge(resource["Type"], own, name, resource.get("IgnoreGlobals"))
        # The merge shares the Globals' own values: the caller gets a copy it may change.
        result: dict[str, Any] = copy.deepcopy(merged)
        return result

    def functions(self) -> list[str]:
        return self.of_type("AWS::Serverless::Function")

    def function_spec(self, name: str) -> dict[str, Any]:
        """A function's properties merged over the template's Globals (always with Environment)."""
        spec = self.properties(name)
        spec.setdefault("Environment", {}).setdefault("Variables", {})
        return spec

    def function_environment(self, name: str) -> dict[str, str]:
        variables = self.resolve(self.function_spec(name)["Environment"]["Variables"])
        return {key: str(value) for key, value in variables.items()}

    def function_handler(self, name: str) -> str:
        handler: str = self.function_spec(name)["Handler"]
        return handler

    def sqs_event(self, name: str) -> dict[str, Any]:
        """The properties of a function's SQS event source (batch size, response types)."""
        for event in self.function_spec(name).get("Events", {}).values():
            if event["Type"] == "SQS":
                properties: dict[str, Any] = self.resolve(event["Properties"])
                return properties
        raise KeyError(f"{name} has no SQS event")

    # --- making the resources --------------------------------------------------------------

    def create(self, session: Any, prefix: str = "videohook") -> Stack:
        """Make every resource with all its properties on `session`'s endpoint (see module doc)."""
        makers: dict[str, Callable[[Any, str, str], None]] = {
            "AWS::SecretsManager::Secret": self._create_secret,
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::S3::BucketPolicy": self._create_bucket_policy,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::SQS::Queue": self._create_queue,
            # Made so that its ARN (an output) is real; no alarm publishes to it locally.
            "AWS::SNS::Topic": self._create_topic,
        }
        for name, spec in self.resources.items():
            if spec["Type"] not in makers and spec["Type"] not in NOT_MADE:
                raise TemplateError(
                    f"{name}: resource type {spec['Type']} is neither made on the local AWS endpoint "
                    "nor listed in infra/template.py NOT_MADE with a reason"
                )
        clients: dict[str, Any] = {}
        for name in self._creation_order([n for n, s in self.resources.items() if s["Type"] in makers]):
            if not self.active(name):
                continue
            kind = self.resources[name]["Type"]
            service = kind.split("::")[1].lower()
            client = clients.get(service) or clients.setdefault(service, session.client(service))
            makers[kind](client, prefix, name)
        return self

    def _creation_order(self, names: list[str]) -> list[str]:
        """`names`, each after the resources its properties refer to (redrive targets, buckets)."""
        ordered: list[str] = []

        def visit(name: str, seen: tuple[str, ...]) -> None:
            if name in ordered:
                return
            if name in seen:
                raise TemplateError(f"circular references between {', '.join(seen)}")
            for other in sorted(_references(self.resources[name].get("Properties", {}), self.resources)):
                if other in names:
                    visit(other, (*seen, name))
            ordered.append(name)

        for name in names:
            visit(name, ())
        return ordered

    def _properties_of(self, name: str) -> _Properties:
        values = self.resolve(self.resources[name].get("Properties", {}))
        return _Properties(name, self.resources[name]["Type"], values)

    def _create_secret(self, client: Any, prefix: str, name: str) -> None:
        props = self._properties_of(name)
        kwargs: dict[str, Any] = {"Name": props.take("Name") or f"{prefix}-{name}"}
        if props.has("Description"):
            kwargs["Description"] = props.take("Description")
        if props.has("Tags"):
            kwargs["Tags"] = props.take("Tags")
        if props.has("GenerateSecretString"):
            kwargs["SecretString"] = _generate_secret(client, props.nested("GenerateSecretString"))
        else:
            kwargs["SecretString"] = str(props.take("SecretString", ""))
        props.finish()
        self.physical[name] = client.create_secret(**kwargs)["ARN"]

    def _create_bucket(self, client: Any, prefix: str, name: str) -> None:
        props = self._properties_of(name)
        bucket = props.take("BucketName") or f"{prefix}-{name}".lower()
        client.create_bucket(Bucket=bucket)
        if props.has("VersioningConfiguration"):
            client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration=props.take("VersioningConfiguration")
            )
        if props.has("BucketEncryption"):
            rules = _rules(props, "BucketEncryption", "ServerSideEncryptionConfiguration", _encryption_rule)
            client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
        if props.has("PublicAccessBlockConfiguration"):
            client.put_public_access_block(
                Bucket=bucket, PublicAccessBlockConfiguration=props.take("PublicAccessBlockConfiguration")
            )
        if props.has("OwnershipControls"):
            client.put_bucket_ownership_controls(
                Bucket=bucket, OwnershipControls=props.take("OwnershipControls")
            )
        if props.has("LifecycleConfiguration"):
            rules = _rules(props, "LifecycleConfiguration", "Rules", _lifecycle_rule)
            client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": rules})
        if props.has("Tags"):
            client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": props.take("Tags")})
        props.finish()
        self.physical[name] = bucket
        self.attributes[(name, "Arn")] = f"arn:aws:s3:::{bucket}"
        self.attributes[(name, "DomainName")] = f"{bucket}.s3.amazonaws.com"

    def _create_bucket_policy(self, client: Any, prefix: str, name: str) -> None:
        props = self._properties_of(name)
        bucket = props.take("Bucket")
        document = props.nested("PolicyDocument")
        statements = []
        for index, statement in enumerate(document.take("Statement", [])):
            insecure_only = statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
            if statement.get("Effect") == "Deny" and str(insecure_only).lower() == "false":
                # The local endpoint is plain HTTP on loopback: applied, this statement would
                # refuse every request (moto also evaluates it without a request context).
                note = (
                    f"{name}: PolicyDocument.Statement[{index}] ({statement.get('Sid', 'no Sid')}) denies "
                    "requests without TLS; not applied, the local AWS endpoint is plain HTTP on loopback"
                )
                self.not_applied.append(note)
                log.warning("template: %s", note)
                continue
            statements.append(statement)
        policy = {"Version": document.take("Version", "2012-10-17"), "Statement": statements}
        if document.has("Id"):
            policy["Id"] = document.take("Id")
        document.finish()
        props.finish()
        if statements:
            client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        self.physical[name] = bucket

    def _create_table(self, client: Any, prefix: str, name: str) -> None:
        props = self._properties_of(name)
        table = props.take("TableName") or f"{prefix}-{name}"
        kwargs: dict[str, Any] = {
            "TableName": table,
            "AttributeDefinitions": props.take("AttributeDefinitions"),
            "KeySchema": props.take("KeySchema"),
            "BillingMode": props.take("BillingMode", "PROVISIONED"),
        }
        # These have the same shape in CloudFormation and in the DynamoDB API.
        for key in (
            "ProvisionedThroughput",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "DeletionProtectionEnabled",
            "Tags",
        ):
            if props.has(key):
                kwargs[key] = props.take(key)
        if props.has("SSESpecification"):
            sse = props.nested("SSESpecification")
            kwargs["SSESpecification"] = {"Enabled": bool(sse.take("SSEEnabled"))}
            for key in ("SSEType", "KMSMasterKeyId"):
                if sse.has(key):
                    kwargs["SSESpecification"][key] = sse.take(key)
            sse.finish()
        if props.has("StreamSpecification"):
            stream = props.nested("StreamSpecification")
            kwargs["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": stream.take("StreamViewType"),
            }
            stream.finish()
        pitr = props.take("PointInTimeRecoverySpecification")
        ttl = props.nested("TimeToLiveSpecification") if props.has("TimeToLiveSpecification") else None
        props.finish()
        description = client.create_table(**kwargs)["TableDescription"]
        if pitr is not None:
            client.update_continuous_backups(TableName=table, PointInTimeRecoverySpecification=pitr)
        if ttl is not None:
            spec = {"AttributeName": ttl.take("AttributeName"), "Enabled": bool(ttl.take("Enabled"))}
            ttl.finish()
            client.update_time_to_live(TableName=table, TimeToLiveSpecification=spec)
        self.physical[name] = table
        self.attributes[(name, "Arn")] = description["TableArn"]
        if "LatestStreamArn" in description:
            self.attributes[(name, "StreamArn")] = description["LatestStreamArn"]

    #: CloudFormation queue properties that are SQS queue attributes of the same name.
    QUEUE_ATTRIBUTES = (
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "DelaySeconds",
        "FifoQueue",
        "FifoThroughputLimit",
        "KmsDataKeyReusePeriodSeconds",
        "KmsMasterKeyId",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "SqsManagedSseEnabled",
        "VisibilityTimeout",
    )

    def _create_topic(self, client: Any, prefix: str, name: str) -> None:
        props = self._properties_of(name)
        topic = props.take("TopicName") or f"{prefix}-{name}"
        attributes = {"DisplayName": props.take("DisplayName")} if props.has("DisplayName") else {}
        props.finish()
        arn = client.create_topic(Name=topic, Attributes=attributes)["TopicArn"]
        self.physical[name] = arn
        self.attributes[(name, "TopicArn")] = arn
        self.attributes[(name, "TopicName")] = topic

    def _create_queue(self, client: Any, prefix: str, name: str) -> None:
        props = self._properties_of(name)
        attributes = {
            key: _attribute_text(props.take(key)) for key in self.QUEUE_ATTRIBUTES if props.has(key)
        }
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if props.has(key):
                policy = props.take(key)
                if "maxReceiveCount" in policy:
                    policy = {**policy, "maxReceiveCount": int(policy["maxReceiveCount"])}
                attributes[key] = json.dumps(policy)
        queue_name = props.take("QueueName") or f"{prefix}-{name}"
        tags = {tag["Key"]: tag["Value"] for tag in props.take("Tags", [])}
        props.finish()
        url = client.create_queue(
            QueueName=queue_name, Attributes=attributes, **({"tags": tags} if tags else {})
        )
        url = url["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.physical[name] = url
        self.attributes[(name, "Arn")] = arn
        self.attributes[(name, "QueueName")] = queue_name
        self.attributes[(name, "QueueUrl")] = url


def _references(value: Any, resources: dict[str, Any]) -> set[str]:
    """The resources a template value refers to (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= _references(item, resources)
    elif isinstance(value, dict):
        if isinstance(value.get("Ref"), str) and value["Ref"] in resources:
            found.add(value["Ref"])
        target = value.get("Fn::GetAtt")
        if target:
            found.add(target.split(".", 1)[0] if isinstance(target, str) else target[0])
        sub = value.get("Fn::Sub")
        text = sub if isinstance(sub, str) else sub[0] if isinstance(sub, list) else ""
        found |= {m.split(".", 1)[0] for m in re.findall(r"\$\{([^}!]+)\}", text)} & set(resources)
        for item in value.values():
            found |= _references(item, resources)
    return found & set(resources)


def _attribute_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _generate_secret(client: Any, spec: _Properties) -> str:
    """GenerateSecretString, with the endpoint's own password generator."""
    template = spec.take("SecretStringTemplate")
    key = spec.take("GenerateStringKey")
    options = {
        option: spec.take(option)
        for option in (
            "PasswordLength",
            "ExcludeCharacters",
            "ExcludeLowercase",
            "ExcludeNumbers",
            "ExcludePunctuation",
            "ExcludeUppercase",
            "IncludeSpace",
            "RequireEachIncludedType",
        )
        if spec.has(option)
    }
    spec.finish()
    password: str = client.get_random_password(**options)["RandomPassword"]
    if template is None and key is None:
        return password
    if template is None or key is None:
        raise spec.refuse("GenerateStringKey", "SecretStringTemplate and GenerateStringKey go together")
    return json.dumps({**json.loads(template), key: password})


def _rules(
    props: _Properties, key: str, list_key: str, rule: Callable[[_Properties], dict[str, Any]]
) -> list[dict[str, Any]]:
    """The API form of each rule in `props[key][list_key]`; anything else under `key` is refused."""
    holder = props.nested(key)
    rules = [rule(holder.nested(list_key, i)) for i in range(len(holder.values.get(list_key, [])))]
    holder.take(list_key)
    holder.finish()
    return rules


def _encryption_rule(rule: _Properties) -> dict[str, Any]:
    """A CloudFormation ServerSideEncryptionRule in the S3 API's shape."""
    converted: dict[str, Any] = {}
    if rule.has("ServerSideEncryptionByDefault"):
        converted["ApplyServerSideEncryptionByDefault"] = rule.take("ServerSideEncryptionByDefault")
    if rule.has("BucketKeyEnabled"):
        converted["BucketKeyEnabled"] = bool(rule.take("BucketKeyEnabled"))
    rule.finish()
    return converted


def _lifecycle_rule(rule: _Properties) -> dict[str, Any]:
    """A CloudFormation lifecycle Rule in the S3 API's shape."""
    converted: dict[str, Any] = {"Status": rule.take("Status"), "Filter": {"Prefix": rule.take("Prefix", "")}}
    if rule.has("Id"):
        converted["ID"] = rule.take("Id")
    if rule.has("AbortIncompleteMultipartUpload"):
        converted["AbortIncompleteMultipartUpload"] = rule.take("AbortIncompleteMultipartUpload")
    expiration = {
        api: rule.take(cfn)
        for cfn, api in (
            ("ExpirationInDays", "Days"),
            ("ExpirationDate", "Date"),
            ("ExpiredObjectDeleteMarker", "ExpiredObjectDeleteMarker"),
        )
        if rule.has(cfn)
    }
    if expiration:
        converted["Expiration"] = expiration
    if rule.has("NoncurrentVersionExpiration"):
        converted["NoncurrentVersionExpiration"] = rule.take("NoncurrentVersionExpiration")
    if rule.has("NoncurrentVersionExpirationInDays"):
        converted["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": rule.take("NoncurrentVersionExpirationInDays")
        }
    if rule.has("Transitions"):
        converted["Transitions"] = [
            {
                api: transition[cfn]
                for cfn, api in (
                    ("StorageClass", "StorageClass"),
                    ("TransitionInDays", "Days"),
                    ("TransitionDate", "Date"),
                )
                if cfn in transition
            }
            for transition in rule.take("Transitions")
        ]
    rule.finish()
    return converted
