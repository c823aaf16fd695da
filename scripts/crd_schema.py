"""A CRD's structural schema as plain JSON Schema, checked as the API server checks.

One converter for every script that validates custom resources offline
(validate-examples.py, check-artifacthub.py, validate-packaging.sh): nullable -> null
type, x-kubernetes-int-or-string -> integer|string, x-kubernetes-* keys dropped, unknown
fields rejected (as `kubectl --validate=strict` does) except under
x-kubernetes-preserve-unknown-fields; apiVersion and kind must be the CRD's own.
"""

import copy

import jsonschema


def to_json_schema(node):
    """Convert a Kubernetes structural schema node to JSON Schema (draft 2020-12)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description", "default"):
            continue
        if key in ("properties",):
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = to_json_schema(value) if isinstance(value, dict) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def validator(crd, version_name=None):
    """A validator for objects of `crd` (a parsed CustomResourceDefinition) at
    `version_name` (default: its first version)."""
    versions = crd["spec"]["versions"]
    version = next(v for v in versions if v["name"] == version_name) if version_name else versions[0]
    group = crd["spec"]["group"]
    schema = to_json_schema(version["schema"]["openAPIV3Schema"])
    # The CRD schema leaves out the fields every object has.
    schema.setdefault("properties", {}).update(
        {
            "apiVersion": {"const": f"{group}/{version['name']}"},
            "kind": {"const": crd["spec"]["names"]["kind"]},
            "metadata": {"type": "object"},
        }
    )
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)
