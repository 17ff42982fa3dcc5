"""What the local functions are configured with: the template's environment, then the user's.

Deployed, each function gets the variables template.yaml gives it, with the template's
parameters and resources filled in. Locally the same happens against the embedded AWS
endpoint, and the user's own environment configures it with the docs/configuration.md variable names:

* a variable the template sets from a parameter (`VIDEO_HOSTS_ALLOWED: !Ref
  VideoHostsAllowed`, ...) becomes that parameter, so everything else the parameter drives
  agrees (`TRANSFER_MAX_ATTEMPTS` is also the queue's `maxReceiveCount`);
* `WEBHOOK_HMAC_KEYS` and `PROVIDER_API_KEY` become the parameters that create their
  Secrets Manager secrets, so the functions read them exactly as deployed;
* `CALLBACK_TOKEN` set replaces the generated token secret's value; set to an empty string
  it turns the token check off (local development only; the app warns loudly);
* the resources (bucket, table, queue URL, secret ARNs) are always the embedded ones;
* any other variable the user sets wins over the template's value, and variables the
  template does not mention (`VIDEO_SOURCE_ALLOW_PRIVATE`, `CALLBACK_BASE_URL`, ...) simply
  stay in the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infra.template import Stack

#: Variables whose value the template can only hold in a secret it creates from a parameter.
SECRET_PARAMETERS = {"WEBHOOK_HMAC_KEYS": "ProviderHmacKey", "PROVIDER_API_KEY": "ProviderApiKey"}
SECRET_ARN_SUFFIX = "_SECRET_ARN"  # noqa: S105 - a variable-name suffix, not a secret


def _function_variables(stack: Stack) -> dict[str, Any]:
    """Every function's unresolved variables (the template gives them nearly the same)."""
    variables: dict[str, Any] = {}
    for function in stack.functions():
        variables.update(stack.function_spec(function)["Environment"]["Variables"])
    return variables


def template_parameters(stack: Stack, user_env: Mapping[str, str]) -> dict[str, str]:
    """The template parameters the user's environment sets."""
    parameters = {}
    for name, value in _function_variables(stack).items():
        is_parameter = isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in stack.parameters
        if is_parameter and name in user_env:
            parameters[value["Ref"]] = user_env[name]
    for name, parameter in SECRET_PARAMETERS.items():
        if name in user_env:
            parameters[parameter] = user_env[name]
    return parameters


def names_resource(value: Any, resources: Mapping[str, Any] | set[str]) -> bool:
    """True when a template value refers to a resource (so only the stack may set it)."""
    if isinstance(value, list):
        return any(names_resource(item, resources) for item in value)
    if isinstance(value, dict):
        if value.get("Ref") in resources:
            return True
        target = value.get("Fn::GetAtt")
        if isinstance(target, list) and target and target[0] in resources:
            return True
        return any(names_resource(item, resources) for item in value.values())
    if isinstance(value, str):
        return any(f"${{{name}" in value for name in resources)
    return False


def function_environment(stack: Stack, user_env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The variables to set for all functions, and notes on conflicts between functions.

    All functions run in one process and so share `os.environ`; the template gives them
    nearly the same variables (the ingest function's secret ARNs, the transfer function's
    part size), so the union is set once. A variable two functions set differently would
    be a problem: it is reported, and the last function's value is kept. A function that sets
    a variable empty only turns it off for itself (the ingest function's provider key, which
    it never uses): that is no conflict, and the value the other functions need is kept.
    """
    raw = _function_variables(stack)
    merged: dict[str, str] = {}
    notes = []
    for function in stack.functions():
        for name, value in stack.function_environment(function).items():
            if name in merged and merged[name] != value:
                if value == "" or merged[name] == "":
                    merged[name] = value or merged[name]
                    continue
                notes.append(f"{name} differs between functions; {function}'s value is used")
            merged[name] = value
    for name in merged:
        if name in user_env and not names_resource(raw.get(name), stack.resources):
            merged[name] = user_env[name]
    for name in list(merged):
        plain = name.removesuffix(SECRET_ARN_SUFFIX)
        if name.endswith(SECRET_ARN_SUFFIX) and user_env.get(plain) == "":
            merged[name] = ""  # explicitly empty: the user turns this secret's check off
    return merged, notes


def secret_overrides(stack: Stack, env: Mapping[str, str], user_env: Mapping[str, str]) -> dict[str, str]:
    """Secret ARN -> value for plain variables the user set whose secret the template generates."""
    overrides = {}
    for name, arn in env.items():
        plain = name.removesuffix(SECRET_ARN_SUFFIX)
        if (
            name.endswith(SECRET_ARN_SUFFIX)
            and arn
            and user_env.get(plain)
            and plain not in SECRET_PARAMETERS
        ):
            overrides[arn] = user_env[plain]
    return overrides


def create_local_bus(events: Any, env: Mapping[str, str]) -> None:
    """Make the EVENT_BUS_NAME bus on the embedded endpoint, so that rules can be put on it.

    Deployed, the bus is the owner's (the default one unless named). A name that is no bus name,
    or one EventBridge refuses to make, is bad configuration: ConfigError, one line naming the
    variable.
    """
    from botocore.exceptions import ClientError

    from videohook.errors import ConfigError
    from videohook.events import DEFAULT_BUS, bus_name

    bus = bus_name(env)
    if bus == DEFAULT_BUS or bus.startswith("arn:"):
        return
    try:
        events.create_event_bus(Name=bus)
    except ClientError as error:
        reason = " ".join(str(error.response.get("Error", {}).get("Message", "refused")).split())
        raise ConfigError(f"EVENT_BUS_NAME {bus[:60]!r} cannot be made as an event bus: {reason}") from None
