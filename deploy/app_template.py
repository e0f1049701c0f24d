"""The app stack: Chalice's SAM template, deep-merged with what the deployment adds.

The merge (Chalice's own `--merge-template` semantics) gives every function its name, log
group, layer and environment, replaces each role's placeholder policy with the function's
grants (deploy/iam.py), points the Cognito authorizer at the data stack's pool, and adds the
alarms. Stack values are `Fn::ImportValue`s of the data and infra stacks' exports.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from chalice.package import TemplateDeepMerger

from chalicelib.settings import OUTPUT_TO_ENV
from deploy import alarms, cfn, iam
from deploy.chalice_package import PLACEHOLDER
from deploy.errors import DeployError
from deploy.functions import FUNCTIONS, check_functions
from deploy.layers import Layer
from deploy.naming import API_FUNCTION, Deployment

SERVERLESS_FUNCTION: Final = "AWS::Serverless::Function"
LOG_RETENTION_DAYS: Final = 30
DEFAULT_EPHEMERAL_STORAGE_MB: Final = 512
API_URL_OUTPUT: Final = "ApiGatewayUrl"


def chalice_functions(sam: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Chalice function name -> (function logical id, role logical id), from the template."""
    found: dict[str, tuple[str, str]] = {}
    for logical_id, resource in sam["Resources"].items():
        if resource["Type"] != SERVERLESS_FUNCTION:
            continue
        properties = resource["Properties"]
        handler = str(properties["Handler"]).split(".", 1)[1]
        name = API_FUNCTION if handler == "app" else handler
        role = properties.get("Role", {}).get("Fn::GetAtt", [None])[0]
        if role is None:
            raise DeployError(
                f"{logical_id} has no role of its own: set iam_policy_file per function"
            )
        found[name] = (logical_id, str(role))
    return found


def render(
    sam: Mapping[str, Any],
    deployment: Deployment,
    layer: Layer,
    *,
    model_ids: Sequence[str],
    model_aliases: Mapping[str, str],
) -> cfn.Template:
    """The app stack's template."""
    functions = chalice_functions(sam)
    check_functions(set(functions))
    environment = {
        variable: cfn.import_value(deployment.export(output))
        for output, variable in OUTPUT_TO_ENV.items()
    }
    resources: dict[str, Any] = {}
    for name, (logical_id, role) in functions.items():
        spec = FUNCTIONS[name]
        function_name = deployment.function_name(name)
        log_group = f"{logical_id}LogGroup"
        resources[log_group] = {
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "LogGroupName": f"/aws/lambda/{function_name}",
                "RetentionInDays": LOG_RETENTION_DAYS,
            },
        }
        properties: dict[str, Any] = {
            "FunctionName": function_name,
            "Description": f"Bedrock SaaS Metering {deployment.stage}: {spec.description}",
            "Environment": {"Variables": environment},
        }
        if spec.pandas_layer:
            properties["Layers"] = [layer.arn]
        if spec.ephemeral_storage_mb != DEFAULT_EPHEMERAL_STORAGE_MB:
            # Chalice's config has no setting for /tmp's size.
            properties["EphemeralStorage"] = {"Size": spec.ephemeral_storage_mb}
        resources[logical_id] = {"DependsOn": [log_group], "Properties": properties}
        document = iam.policy(iam.grants(spec, model_ids, model_aliases), function_name)
        resources[role] = {
            "Properties": {
                "Policies": [
                    {
                        "PolicyName": f"{name}-least-privilege",
                        "PolicyDocument": iam.cloudformation(document, deployment),
                    }
                ]
            }
        }

    resources.update(_api(sam, deployment))
    jobs = {name: logical for name, (logical, _) in functions.items() if FUNCTIONS[name].is_job}
    repair = f"{functions['repair_budget_counters'][0]}LogGroup"
    resources.update(alarms.resources(deployment, jobs, repair))

    api_url = sam.get("Outputs", {}).get("EndpointURL", {}).get("Value")
    merge: dict[str, Any] = {
        "Description": (
            f"Bedrock SaaS Metering {deployment.stage} - the Chalice app: API, functions, "
            "their roles and logs, alarms. Imports from the data and infra stacks."
        ),
        "Resources": resources,
        "Outputs": {
            API_URL_OUTPUT: {"Description": "The API's base URL (meterctl, curl)", "Value": api_url}
        },
    }
    template: cfn.Template = TemplateDeepMerger().merge(merge, dict(sam))
    leftover = PLACEHOLDER in json.dumps(template)
    if leftover:
        raise DeployError("a packaging placeholder survived the merge; the template is not safe")
    return template


def _api(sam: Mapping[str, Any], deployment: Deployment) -> dict[str, Any]:
    """The REST API named per stage, its Cognito authorizer on the data stack's pool."""
    apis = [i for i, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Api"]
    if len(apis) != 1:
        raise DeployError(f"expected one REST API in Chalice's template, found {apis}")
    body = sam["Resources"][apis[0]]["Properties"]["DefinitionBody"]
    pool = cfn.import_value(deployment.export("UserPoolArn"))
    security = {
        name: {"x-amazon-apigateway-authorizer": {"providerARNs": [pool]}}
        for name, definition in body.get("securityDefinitions", {}).items()
        if definition.get("x-amazon-apigateway-authtype") == "cognito_user_pools"
    }
    if not security:
        raise DeployError("the API has no Cognito authorizer: was TOKEN_VERIFICATION=apigateway?")
    return {
        apis[0]: {
            "Properties": {
                "Name": deployment.api_name,
                "DefinitionBody": {
                    "info": {"title": deployment.api_name},
                    "securityDefinitions": security,
                },
            }
        }
    }
