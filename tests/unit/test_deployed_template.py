"""What the deployed stack promises, checked on CloudFormation as SAM produces it.

template.yaml is transformed with aws-sam-translator (the transform `sam deploy` runs,
offline here) and the assertions read the resulting CloudFormation: the roles, API
integrations, event source mapping and stage that AWS would create, including what SAM
adds on its own (managed policies, integration credentials).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from infra.template import ROOT, load_template

#: Managed policies a role may carry: SAM's own for logs and X-Ray, with no SQS, S3 or
#: DynamoDB action (AWSLambdaSQSQueueExecutionRole and AWSLambdaDynamoDBExecutionRole name
#: every queue and stream of the account).
ALLOWED_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
#: The access log may record these and nothing else: none carries the query string (the
#: callback token) or a path parameter's value.
ACCESS_LOG_VARIABLES = {
    "requestId",
    "requestTime",
    "identity.sourceIp",
    "identity.caller",
    "identity.user",
    "httpMethod",
    "resourcePath",
    "status",
    "protocol",
    "responseLength",
    "integrationLatency",
    "error.message",
}


def packaged(template: dict[str, Any]) -> dict[str, Any]:
    """The template as `sam package` leaves it: local code folders become S3 locations."""
    for section in (template.get("Globals", {}).get("Function", {}), *template["Resources"].values()):
        properties = section.get("Properties", section) if "Type" in section else section
        for key in ("CodeUri", "ContentUri"):
            if isinstance(properties.get(key), str) and not properties[key].startswith("s3://"):
                properties[key] = f"s3://videohook-artifacts/{properties[key].strip('/')}.zip"
    return template


@lru_cache(maxsize=2)
def _transformed(provider_api_key: str) -> str:
    session = boto3.session.Session(region_name="us-east-1")
    translator = Translator(managed_policy_map={}, sam_parser=Parser(), boto_session=session)
    parameters = {"ProviderApiKey": provider_api_key, "AWS::AccountId": "123456789012"}
    return json.dumps(
        translator.translate(sam_template=packaged(load_template()), parameter_values=parameters)
    )


def transformed(provider_api_key: str = "configured") -> dict[str, Any]:
    """The CloudFormation resources SAM makes of template.yaml (a fresh copy)."""
    resources: dict[str, Any] = json.loads(_transformed(provider_api_key))["Resources"]
    return resources


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: spec for name, spec in resources.items() if spec["Type"] == kind}


def role_of(resources: dict[str, Any], function: str) -> dict[str, Any]:
    role = resources[function]["Properties"]["Role"]
    assert set(role) == {"Fn::GetAtt"} and role["Fn::GetAtt"][1] == "Arn", role
    properties: dict[str, Any] = resources[role["Fn::GetAtt"][0]]["Properties"]
    return properties


def managed_policies(role: dict[str, Any]) -> set[str]:
    """A role's managed policy ARNs (a `!Sub` naming the partition read as the aws one)."""
    arns = role.get("ManagedPolicyArns", [])
    return {
        arn["Fn::Sub"].replace("${AWS::Partition}", "aws") if isinstance(arn, dict) else arn for arn in arns
    }


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """Every inline statement of a role, both branches of any Fn::If included."""
    found: list[dict[str, Any]] = []

    def collect(item: Any) -> None:
        if isinstance(item, dict) and "Fn::If" in item:
            for branch in item["Fn::If"][1:]:
                collect(branch)
        elif isinstance(item, dict) and "Effect" in item:
            found.append(item)

    for policy in role.get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            collect(statement)
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement.get("Action", [])
    return [action] if isinstance(action, str) else list(action)


def sqs_mapping(resources: dict[str, Any]) -> dict[str, Any]:
    """The one event source mapping that reads an SQS queue (the transfer queue's)."""
    (mapping,) = [
        m
        for m in of_type(resources, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"].get("Fn::GetAtt", ["", ""])[1] == "Arn"
    ]
    return mapping


def api_paths(resources: dict[str, Any]) -> dict[str, Any]:
    (api,) = of_type(resources, "AWS::ApiGateway::RestApi").values()
    paths: dict[str, Any] = api["Properties"]["Body"]["paths"]
    return paths


def functions_serving(resources: dict[str, Any], path: str) -> set[str]:
    found = set()
    for method in api_paths(resources)[path].values():
        uri = method["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
        found |= set(re.findall(r"\$\{(\w+)\.Arn\}", uri))
    return found


# --- the routes ---------------------------------------------------------------------------


def test_iam_routes_are_invoked_with_api_gateways_own_permission_not_the_callers() -> None:
    # GIVEN the API as SAM deploys it
    resources = transformed()
    paths = api_paths(resources)
    task_paths = [path for path in paths if path.startswith("/tasks")]
    assert task_paths
    for path in task_paths:
        for method, spec in paths[path].items():
            # THEN each /tasks route requires SigV4 and carries no integration credentials
            # (SAM's AWS_IAM default is credentials arn:aws:iam::*:user/*, the caller's)
            assert spec["security"] == [{"AWS_IAM": []}], (path, method)
            assert "credentials" not in spec["x-amazon-apigateway-integration"], (path, method)
            # AND API Gateway holds a Lambda permission to invoke the function itself
            (function,) = functions_serving(resources, path)
            permissions = [
                p["Properties"]
                for p in of_type(resources, "AWS::Lambda::Permission").values()
                if p["Properties"]["FunctionName"] == {"Ref": function}
                and p["Properties"]["Principal"] == "apigateway.amazonaws.com"
                and f"/{method.upper()}{path.split('{')[0]}" in json.dumps(p["Properties"]["SourceArn"])
            ]
            assert permissions, (path, method)
    # AND the callback route is the only one open, without credentials either
    assert paths["/callbacks"]["post"]["security"] == [{"NONE": []}]
    assert "credentials" not in paths["/callbacks"]["post"]["x-amazon-apigateway-integration"]


def test_the_callback_function_serves_only_the_callback_and_its_role_reads_no_video_and_no_api_key() -> None:
    # GIVEN the function behind POST /callbacks, with a provider API key configured
    resources = transformed("configured")
    (callback,) = functions_serving(resources, "/callbacks")
    # THEN it serves no other route
    others = {path for path in api_paths(resources) if path != "/callbacks"}
    assert all(callback not in functions_serving(resources, path) for path in others)
    # AND its role has no S3 action and cannot read the provider API key's secret
    role = role_of(resources, callback)
    assert managed_policies(role) <= ALLOWED_MANAGED_POLICIES
    for statement in statements(role):
        assert not [a for a in actions(statement) if a.lower().startswith("s3:")], statement
        assert "ProviderApiKeySecret" not in json.dumps(statement), statement
    # AND its environment names no provider API key secret
    variables = resources[callback]["Properties"]["Environment"]["Variables"]
    assert "ProviderApiKeySecret" not in json.dumps(variables)


# --- every role -----------------------------------------------------------------------------


@pytest.mark.parametrize("provider_api_key", ["", "configured"])
def test_no_role_has_a_data_action_on_a_wildcard_resource(provider_api_key: str) -> None:
    # GIVEN every IAM role of the deployed stack (with and without a provider API key)
    resources = transformed(provider_api_key)
    roles = of_type(resources, "AWS::IAM::Role")
    # (every function's role is one of them, so none escapes the check)
    for function in of_type(resources, "AWS::Lambda::Function"):
        assert role_of(resources, function) in [role["Properties"] for role in roles.values()]
    for name, role in roles.items():
        # THEN it carries no managed policy beyond logs and X-Ray
        assert managed_policies(role["Properties"]) <= ALLOWED_MANAGED_POLICIES, name
        for statement in statements(role["Properties"]):
            data = [a for a in actions(statement) if a.split(":")[0].lower() in {"sqs", "s3", "dynamodb"}]
            if not data:
                continue
            # AND its SQS, S3 and DynamoDB actions name resources, the one wildcard being
            # the objects under the bucket's videos/ prefix
            assert not any("*" in a for a in data), (name, statement)
            # (and the task table's own streams, for the stream event source's ListStreams)
            resource = json.dumps(statement["Resource"]).replace("/videos/*", "")
            resource = resource.replace("${TasksTable.Arn}/stream/*", "")
            assert "*" not in resource, (name, statement)


def test_the_transfer_role_reads_and_deletes_messages_of_its_own_queue_only() -> None:
    # GIVEN the transfer function's role
    resources = transformed()
    mapping = sqs_mapping(resources)
    function = mapping["Properties"]["FunctionName"]["Ref"]
    role = role_of(resources, function)
    # THEN every SQS action it holds names the queue its event source reads
    sqs = [s for s in statements(role) if any(a.startswith("sqs:") for a in actions(s))]
    assert sqs
    assert all(s["Resource"] == mapping["Properties"]["EventSourceArn"] for s in sqs)
    granted = {a for s in sqs for a in actions(s)}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"} <= granted


def test_the_sqs_event_source_keeps_batch_size_partial_failures_and_maximum_concurrency() -> None:
    resources = transformed()
    properties = sqs_mapping(resources)["Properties"]
    assert properties["EventSourceArn"] == {"Fn::GetAtt": ["TransferQueue", "Arn"]}
    assert properties["BatchSize"] == 1
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "TransferMaximumConcurrency"}}


# --- alarms that watch what AWS reports -----------------------------------------------------


def test_a_callback_answered_5xx_by_api_gateway_itself_is_alarmed_on() -> None:
    # GIVEN the deployed stack, and the alarm on API Gateway's own 5xx count
    resources = transformed()
    alarms = [
        a["Properties"]
        for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == "AWS/ApiGateway"
    ]
    (alarm,) = [a for a in alarms if a["MetricName"] == "5XXError"]
    dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    # THEN its dimensions are the ones API Gateway publishes per method for the callback
    # route (a dimension that differs draws nothing and never fires): the API's name...
    (api,) = of_type(resources, "AWS::ApiGateway::RestApi").values()
    assert dimensions["ApiName"] == api["Properties"]["Name"]
    # ...its stage, with per-method (detailed) metrics on for every route...
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    assert dimensions["Stage"] == stage["Properties"]["StageName"]
    assert any(
        s["ResourcePath"] == "/*" and s["HttpMethod"] == "*" and s["MetricsEnabled"] is True
        for s in stage["Properties"]["MethodSettings"]
    )
    # ...and the callback route's path and method
    assert set(dimensions) == {"ApiName", "Stage", "Resource", "Method"}
    assert dimensions["Resource"] == "/callbacks" and dimensions["Method"] == "POST"
    assert "post" in api_paths(resources)[dimensions["Resource"]]
    # AND it sends to the alarm topic
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


# --- secrets out of traces and logs ---------------------------------------------------------


def test_the_api_stage_neither_traces_nor_logs_the_callback_token() -> None:
    # GIVEN the API stage as deployed
    (stage,) = of_type(transformed(), "AWS::ApiGateway::Stage").values()
    properties = stage["Properties"]
    # THEN the stage's own X-Ray tracing (which records the full URL) is off
    assert properties.get("TracingEnabled", False) is False
    # AND execution logs and data traces (which record the query string) are off everywhere
    for setting in properties["MethodSettings"]:
        assert setting["LoggingLevel"] == "OFF" and setting["DataTraceEnabled"] is False
    # AND the access log records only variables that carry neither query string nor path values
    used = set(re.findall(r"\$context\.([A-Za-z.]+[A-Za-z])", properties["AccessLogSetting"]["Format"]))
    assert used and used <= ACCESS_LOG_VARIABLES, used - ACCESS_LOG_VARIABLES
    json.loads(properties["AccessLogSetting"]["Format"])


def test_the_api_has_one_stage_the_one_whose_settings_keep_the_token_out() -> None:
    # GIVEN the API as SAM deploys it
    resources = transformed()
    # THEN its one deployment makes no stage of its own (SAM's "Stage" stage, which would
    # serve every route again without the Prod stage's throttling and settings)
    for name, deployment in of_type(resources, "AWS::ApiGateway::Deployment").items():
        assert "StageName" not in deployment["Properties"], name
    # AND the only stage is the configured one
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["StageName"] == "Prod"
    assert stage["Properties"]["MethodSettings"][0]["ThrottlingRateLimit"] > 0


def test_the_functions_trace_themselves() -> None:
    for name, function in of_type(transformed(), "AWS::Lambda::Function").items():
        assert function["Properties"]["TracingConfig"] == {"Mode": "Active"}, name


def test_the_callback_token_survives_a_replacement_or_deletion_of_the_stack() -> None:
    secret = transformed()["CallbackTokenSecret"]
    assert secret["DeletionPolicy"] == "Retain" and secret["UpdateReplacePolicy"] == "Retain"


# --- what is built and uploaded ---------------------------------------------------------------


def test_dependencies_come_from_one_layer_and_each_function_carries_only_our_code() -> None:
    # GIVEN the SAM template and its transformed form
    template = load_template()
    (layer_name,) = [
        n for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::LayerVersion"
    ]
    layer = template["Resources"][layer_name]
    # THEN the layer is built by SAM for the functions' runtime and architecture from the lock file
    assert layer["Metadata"] == {"BuildMethod": "python3.12", "BuildArchitecture": "arm64"}
    lock = (ROOT / layer["Properties"]["ContentUri"] / "requirements.txt").read_text()
    pinned = [
        line for line in lock.splitlines() if line and not line[0].isspace() and not line.startswith("#")
    ]
    assert pinned and all("==" in line for line in pinned)
    assert lock.count("--hash=sha256:") >= len(pinned)
    # AND every function uses it, while its own code folder holds no dependency list to install
    resources = transformed()
    (layer_version,) = of_type(resources, "AWS::Lambda::LayerVersion")
    for name, function in of_type(resources, "AWS::Lambda::Function").items():
        assert function["Properties"]["Layers"] == [{"Ref": layer_version}], name
    for name in template["Resources"]:
        if template["Resources"][name]["Type"] == "AWS::Serverless::Function":
            code = (
                template["Resources"][name]["Properties"].get("CodeUri")
                or template["Globals"]["Function"]["CodeUri"]
            )
            assert not (ROOT / code / "requirements.txt").exists(), name


def test_a_route_miss_at_the_gateway_answers_404_not_found_not_a_bare_403() -> None:
    # GIVEN the API as SAM deploys it (gateway responses live in its OpenAPI body)
    body = transformed()["VideohookApi"]["Properties"]["Body"]
    # WHEN API Gateway meets a path or method no route declares (its MISSING_AUTHENTICATION_TOKEN)
    miss = body["x-amazon-apigateway-gateway-responses"]["MISSING_AUTHENTICATION_TOKEN"]
    # THEN it answers 404 with the machine code the functions give a route miss
    assert miss["statusCode"] == "404"
    assert json.loads(miss["responseTemplates"]["application/json"])["error"] == "not_found"
