"""The template reader (infra/template.py): what it reads, merges and makes on moto.

Each property a made resource carries is either found on the endpoint afterwards or
refused by name; templates other than template.yaml are small ones written here.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from infra.local.environment import function_environment
from infra.template import NotApplicable, Stack, TemplateError
from tests.conftest import use_moto_credentials


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    use_moto_credentials(monkeypatch)
    with mock_aws():
        yield boto3.session.Session(region_name="us-east-1")


def template_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text('AWSTemplateFormatVersion: "2010-09-09"\n' + textwrap.dedent(body))
    return path


# --- reading ---------------------------------------------------------------------------


def test_a_template_that_does_not_parse_fails_with_the_decoders_message(tmp_path: Path) -> None:
    # GIVEN a template with a YAML syntax error
    path = template_file(tmp_path, "Resources: [unclosed\n")
    # WHEN it is read THEN the error names the file and cfn-lint's parsing error
    with pytest.raises(TemplateError, match=r"template\.yaml: .*Parsing error"):
        Stack.from_file(path=path)


def test_short_tags_read_as_their_long_forms(tmp_path: Path) -> None:
    # GIVEN a template written with short tags
    path = template_file(
        tmp_path,
        """
        Resources:
          Queue:
            Type: AWS::SQS::Queue
            Properties:
              RedrivePolicy:
                deadLetterTargetArn: !GetAtt Dead.Arn
                maxReceiveCount: !Ref AWS::NoValue
              KmsMasterKeyId: !Sub "${AWS::Region}-key"
          Dead:
            Type: AWS::SQS::Queue
        """,
    )
    # WHEN it is read
    props = Stack.from_file(path=path).resources["Queue"]["Properties"]
    # THEN the values are the long forms, in plain JSON types
    assert props["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["Dead", "Arn"]},
        "maxReceiveCount": {"Ref": "AWS::NoValue"},
    }
    assert props["KmsMasterKeyId"] == {"Fn::Sub": "${AWS::Region}-key"}
    assert type(props) is dict


# --- Globals ---------------------------------------------------------------------------

SAM_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: python3.12
    Architectures: [arm64]
    Timeout: 10
    Layers: [arn:aws:lambda:us-east-1:123456789012:layer:shared:1]
    Environment:
      Variables:
        SHARED: from-globals
        OVERRIDDEN: from-globals
        TABLE: !Ref Table
    Tags:
      team: videos
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
  Own:
    Type: AWS::Serverless::Function
    Properties:
      Handler: own.handler
      Architectures: [x86_64]
      Timeout: 30
      Layers: [arn:aws:lambda:us-east-1:123456789012:layer:own:3]
      Environment:
        Variables:
          OVERRIDDEN: own
          TABLE: !GetAtt Table.Arn
      Tags:
        owner: me
  Plain:
    Type: AWS::Serverless::Function
    Properties:
      Handler: plain.handler
  Ignoring:
    Type: AWS::Serverless::Function
    IgnoreGlobals: [Layers]
    Properties:
      Handler: ignoring.handler
"""


def test_globals_merge_as_sam_merges_them(tmp_path: Path) -> None:
    # GIVEN a SAM template whose function sets some of the Globals' properties itself
    stack = Stack.from_file(path=template_file(tmp_path, SAM_TEMPLATE))
    # WHEN the function's properties are read
    own = stack.function_spec("Own")
    # THEN maps are merged (the function's value wins), lists appended, scalars replaced,
    # an intrinsic function taken whole, and Architectures replaced (SAM's own exception)
    assert own["Environment"]["Variables"] == {
        "SHARED": "from-globals",
        "OVERRIDDEN": "own",
        "TABLE": {"Fn::GetAtt": ["Table", "Arn"]},
    }
    assert own["Layers"] == [
        "arn:aws:lambda:us-east-1:123456789012:layer:shared:1",
        "arn:aws:lambda:us-east-1:123456789012:layer:own:3",
    ]
    assert own["Tags"] == {"team": "videos", "owner": "me"}
    assert own["Timeout"] == 30 and own["Runtime"] == "python3.12"
    assert own["Architectures"] == ["x86_64"]


def test_a_function_without_its_own_values_takes_the_globals_and_ignore_globals_is_honoured(
    tmp_path: Path,
) -> None:
    # GIVEN a function that sets nothing of its own, and one that ignores the global Layers
    stack = Stack.from_file(path=template_file(tmp_path, SAM_TEMPLATE))
    # WHEN their properties are read
    plain, ignoring = stack.function_spec("Plain"), stack.function_spec("Ignoring")
    # THEN the first has every global value, the second all but the Layers
    assert plain["Layers"] == ["arn:aws:lambda:us-east-1:123456789012:layer:shared:1"]
    assert plain["Environment"]["Variables"]["OVERRIDDEN"] == "from-globals"
    assert "Layers" not in ignoring and ignoring["Timeout"] == 10
    # AND changing what was returned does not change the Globals for the next reader
    plain["Environment"]["Variables"]["SHARED"] = "changed"
    assert stack.function_spec("Own")["Environment"]["Variables"]["SHARED"] == "from-globals"


def test_function_environment_resolves_against_what_was_made(tmp_path: Path, session: Any) -> None:
    # GIVEN the SAM template's table made on the endpoint
    stack = Stack.from_file(path=template_file(tmp_path, SAM_TEMPLATE)).create(session)
    # WHEN a function's environment is read THEN Ref and GetAtt name the made table
    env = stack.function_environment("Own")
    assert (
        env["TABLE"]
        == session.client("dynamodb").describe_table(TableName="videohook-Table")["Table"]["TableArn"]
    )
    assert stack.function_environment("Plain")["TABLE"] == "videohook-Table"


def test_one_environment_for_all_functions_keeps_the_provider_key_without_a_conflict(session: Any) -> None:
    # GIVEN template.yaml made with a provider API key: the ingest function sets its ARN empty
    # (it never calls the provider), the other functions name the secret
    stack = Stack.from_file({"ProviderApiKey": "k"}).create(session)
    # WHEN the local stack merges the functions' variables into one environment
    env, notes = function_environment(stack, {})
    # THEN the secret is kept for the functions that use it, and nothing is reported as a conflict
    assert env["PROVIDER_API_KEY_SECRET_ARN"].startswith("arn:aws:secretsmanager:")
    assert notes == []


# --- making template.yaml's resources --------------------------------------------------


def test_every_property_of_template_yaml_is_found_on_the_endpoint(session: Any) -> None:
    # GIVEN template.yaml's resources made on the endpoint
    stack = Stack.from_file({"ProviderHmacKey": "k"}).create(session)
    s3, ddb, sqs = session.client("s3"), session.client("dynamodb"), session.client("sqs")
    bucket = stack.physical["VideosBucket"]
    # THEN the bucket has every setting the template gives it
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    (rule,) = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert rule["BucketKeyEnabled"] is True
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]
    assert ownership == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    (lifecycle,) = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert lifecycle["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    # AND the bucket policy's deny on plain HTTP is the one thing reported as not applied
    assert stack.not_applied == [
        "VideosBucketPolicy: PolicyDocument.Statement[0] (DenyInsecureTransport) denies requests without "
        "TLS; not applied, the local AWS endpoint is plain HTTP on loopback"
    ]
    # AND the table has its index, encryption and point-in-time recovery
    table = ddb.describe_table(TableName=stack.physical["TasksTable"])["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])] == [
        "poll-due",
        "by-updated",
        "by-status",
    ]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["SSEDescription"]["Status"] == "ENABLED"
    backups = ddb.describe_continuous_backups(TableName=stack.physical["TasksTable"])
    assert backups["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"][
        "PointInTimeRecoveryStatus"
    ] == ("ENABLED")
    # AND the queues are encrypted, and the transfer queue redrives to its dead-letter queue
    for queue in ("TransferQueue", "TransferDeadLetterQueue"):
        attributes = sqs.get_queue_attributes(QueueUrl=stack.physical[queue], AttributeNames=["All"])[
            "Attributes"
        ]
        assert attributes["SqsManagedSseEnabled"] == "true"
        assert attributes["MessageRetentionPeriod"] == "1209600"
    attributes = sqs.get_queue_attributes(QueueUrl=stack.physical["TransferQueue"], AttributeNames=["All"])
    redrive = json.loads(attributes["Attributes"]["RedrivePolicy"])
    assert redrive == {
        "deadLetterTargetArn": stack.attributes[("TransferDeadLetterQueue", "Arn")],
        "maxReceiveCount": 5,
    }
    # AND the generated callback token has the length the template asks for
    token = session.client("secretsmanager").get_secret_value(SecretId=stack.physical["CallbackTokenSecret"])
    assert len(token["SecretString"]) == 48 and token["SecretString"].isalnum()


# --- what it applies beyond template.yaml, and what it refuses ---------------------------


def test_other_bucket_policy_statements_are_applied(tmp_path: Path, session: Any) -> None:
    # GIVEN a bucket policy with a statement besides the plain-HTTP deny
    path = template_file(
        tmp_path,
        """
        Resources:
          Bucket:
            Type: AWS::S3::Bucket
          Policy:
            Type: AWS::S3::BucketPolicy
            Properties:
              Bucket: !Ref Bucket
              PolicyDocument:
                Version: "2012-10-17"
                Statement:
                  - Sid: DenyInsecureTransport
                    Effect: Deny
                    Principal: "*"
                    Action: "s3:*"
                    Resource: !Sub "${Bucket.Arn}/*"
                    Condition: {Bool: {"aws:SecureTransport": "false"}}
                  - Sid: DenyDeletes
                    Effect: Deny
                    Principal: "*"
                    Action: s3:DeleteObject
                    Resource: !Sub "${Bucket.Arn}/*"
        """,
    )
    # WHEN it is made (the policy after the bucket it names, whatever the order in the file)
    stack = Stack.from_file(path=path).create(session)
    # THEN the endpoint holds the other statement, and enforces it
    s3 = session.client("s3")
    policy = json.loads(s3.get_bucket_policy(Bucket=stack.physical["Bucket"])["Policy"])
    assert [statement["Sid"] for statement in policy["Statement"]] == ["DenyDeletes"]
    s3.put_object(Bucket=stack.physical["Bucket"], Key="k", Body=b"x")
    with pytest.raises(s3.exceptions.ClientError, match=r"AccessDenied|Forbidden"):
        s3.delete_object(Bucket=stack.physical["Bucket"], Key="k")


def test_a_table_stream_and_time_to_live_are_applied(tmp_path: Path, session: Any) -> None:
    # GIVEN a table with a stream and a time-to-live attribute
    path = template_file(
        tmp_path,
        """
        Resources:
          Table:
            Type: AWS::DynamoDB::Table
            Properties:
              BillingMode: PAY_PER_REQUEST
              AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
              KeySchema: [{AttributeName: id, KeyType: HASH}]
              StreamSpecification: {StreamViewType: NEW_AND_OLD_IMAGES}
              TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
        """,
    )
    # WHEN it is made
    stack = Stack.from_file(path=path).create(session)
    # THEN the stream exists, its ARN resolves as !GetAtt Table.StreamArn, and TTL is on
    ddb = session.client("dynamodb")
    table = ddb.describe_table(TableName=stack.physical["Table"])["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert stack.resolve({"Fn::GetAtt": ["Table", "StreamArn"]}) == table["LatestStreamArn"]
    ttl = ddb.describe_time_to_live(TableName=stack.physical["Table"])["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


@pytest.mark.parametrize(
    ("resource", "prop"),
    [
        (
            """
            Bucket:
              Type: AWS::S3::Bucket
              Properties:
                AccelerateConfiguration: {AccelerationStatus: Enabled}
            """,
            "Bucket (AWS::S3::Bucket): property AccelerateConfiguration",
        ),
        (
            """
            Bucket:
              Type: AWS::S3::Bucket
              Properties:
                LifecycleConfiguration:
                  Rules:
                    - Status: Enabled
                      TagFilters: [{Key: a, Value: b}]
            """,
            "Bucket (AWS::S3::Bucket): property LifecycleConfiguration.Rules[0].TagFilters",
        ),
        (
            """
            Queue:
              Type: AWS::SQS::Queue
              Properties:
                VisibilityTimeout: 30
                Unknown: 1
            """,
            "Queue (AWS::SQS::Queue): property Unknown",
        ),
        (
            """
            Table:
              Type: AWS::DynamoDB::Table
              Properties:
                BillingMode: PAY_PER_REQUEST
                AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
                KeySchema: [{AttributeName: id, KeyType: HASH}]
                KinesisStreamSpecification: {StreamArn: arn:aws:kinesis:us-east-1:123456789012:stream/s}
            """,
            "Table (AWS::DynamoDB::Table): property KinesisStreamSpecification",
        ),
        (
            """
            Secret:
              Type: AWS::SecretsManager::Secret
              Properties:
                KmsKeyId: alias/mine
                SecretString: x
            """,
            "Secret (AWS::SecretsManager::Secret): property KmsKeyId",
        ),
    ],
)
def test_a_property_the_reader_cannot_apply_fails_naming_resource_and_property(
    tmp_path: Path, session: Any, resource: str, prop: str
) -> None:
    # GIVEN a resource with a property the reader does not apply
    path = template_file(tmp_path, "Resources:\n" + textwrap.indent(textwrap.dedent(resource), "  "))
    # WHEN the stack is made THEN it fails, naming the resource and the property
    with pytest.raises(NotApplicable, match=re.escape(prop)):
        Stack.from_file(path=path).create(session)


def test_a_resource_type_the_local_stack_neither_makes_nor_lists_fails(tmp_path: Path, session: Any) -> None:
    # GIVEN a resource of a type the reader has no rule for
    path = template_file(
        tmp_path,
        """
        Resources:
          Stream:
            Type: AWS::Kinesis::Stream
            Properties: {ShardCount: 1}
        """,
    )
    # WHEN the stack is made THEN it fails naming the resource and its type
    with pytest.raises(TemplateError, match=r"Stream: resource type AWS::Kinesis::Stream is neither made"):
        Stack.from_file(path=path).create(session)


def test_an_intrinsic_function_the_reader_does_not_interpret_fails(tmp_path: Path) -> None:
    stack = Stack.from_file(path=template_file(tmp_path, "Resources: {}\n"))
    with pytest.raises(TemplateError, match="does not interpret Fn::ImportValue"):
        stack.resolve({"Fn::ImportValue": "elsewhere"})
    assert (
        stack.resolve({"Fn::Join": ["-", ["a", {"Fn::Select": [1, {"Fn::Split": [",", "x,y"]}]}]]}) == "a-y"
    )
    assert stack.resolve({"Fn::Sub": ["${Name}.${AWS::Region}", {"Name": "n"}]}) == "n.us-east-1"
