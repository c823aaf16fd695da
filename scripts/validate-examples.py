#!/usr/bin/env python3
"""Validate the example CounterApps against the CRD's openAPIV3Schema.

The Kubernetes structural schema in crds/counterapp.yaml is converted to plain JSON
Schema (nullable -> null type, x-kubernetes-int-or-string -> integer|string,
x-kubernetes-* keys dropped, unknown fields rejected as `kubectl --validate=strict`
does) and every example is checked with the `jsonschema` library (a dependency of
PyPI check-jsonschema):

- manifests/examples/*.yaml must pass;
- manifests/examples/invalid/*.yaml marked `# caught-by: schema` must fail, and the
  error must name the field of their `# field:` header;
- those marked `# caught-by: cel` break a CEL rule, which JSON Schema cannot evaluate
  (`cargo test --test it examples::` runs them with kube's CEL engine): they must pass the
  structural schema, so each example holds exactly one mistake;
- invalid/transitions/*.{old,new}.yaml (CEL transition rules) must pass structurally.

Usage: scripts/validate-examples.py [--crd crds/counterapp.yaml] [--examples manifests/examples]
Exit status 0 when every expectation holds, 1 otherwise.
"""

import argparse
import pathlib
import sys

import yaml

import crd_schema


def load_schema(crd_path):
    return crd_schema.validator(yaml.safe_load(crd_path.read_text()))


def header(text, key):
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith(f"# {key}:"):
            return line.split(":", 1)[1].strip()
    return None


def error_fields(error):
    """Dotted field paths an error is about (`spec.web.replicas`)."""
    base = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path).replace(".[", "[")
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return [f"{base}.{k}" if base else k for k in extra]
    return [base]


def check(validator, path):
    """Errors of one file, as (field, message) pairs."""
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        return [("(YAML)", str(e).replace("\n", " "))]
    errors = []
    for e in validator.iter_errors(doc):
        # anyOf/oneOf errors carry the precise cause in their context.
        for leaf in (e.context or [e]) if e.validator in ("anyOf", "oneOf") else [e]:
            for field in error_fields(leaf):
                errors.append((field, leaf.message))
    return errors


def rel(path):
    try:
        return path.relative_to(pathlib.Path.cwd())
    except ValueError:
        return path


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crd", type=pathlib.Path, default=root / "crds/counterapp.yaml")
    parser.add_argument("--examples", type=pathlib.Path, default=root / "manifests/examples")
    args = parser.parse_args()

    validator = load_schema(args.crd)
    failures = []
    counts = {"valid": 0, "schema": 0, "cel": 0, "transition": 0}

    def expect_valid(path, what):
        errors = check(validator, path)
        if errors:
            failures.append(f"{path}: expected to pass the schema ({what}), got: {errors}")
        else:
            print(f"ok   {rel(path)}: passes the schema ({what})")

    for path in sorted(args.examples.glob("*.yaml")):
        expect_valid(path, "valid example")
        counts["valid"] += 1

    for path in sorted((args.examples / "invalid").glob("*.yaml")):
        text = path.read_text()
        field, caught_by = header(text, "field"), header(text, "caught-by")
        if not field or caught_by not in ("schema", "cel"):
            failures.append(f"{path}: needs '# field:' and '# caught-by: schema|cel' headers")
            continue
        if caught_by == "cel":
            expect_valid(path, "breaks only a CEL rule")
            counts["cel"] += 1
            continue
        counts["schema"] += 1
        errors = check(validator, path)
        if not errors:
            failures.append(f"{path}: expected a schema error on {field}, but it passes")
        elif not any(f == field for f, _ in errors):
            failures.append(f"{path}: errors do not name {field}: {errors}")
        else:
            msgs = "; ".join(f"{f}: {m}" for f, m in errors)
            print(f"ok   {rel(path)}: rejected: {msgs}")

    for path in sorted((args.examples / "invalid" / "transitions").glob("*.yaml")):
        expect_valid(path, "half of a CEL transition pair")
        counts["transition"] += 1

    if counts["valid"] < 2 or counts["schema"] + counts["cel"] < 6:
        failures.append(f"too few examples: {counts}")
    for f in failures:
        print(f"FAIL {f}", file=sys.stderr)
    print(
        f"validate-examples: {counts['valid']} valid, {counts['schema']} schema-invalid checked, "
        f"{counts['cel']} CEL-invalid and {counts['transition']} transition files structurally valid; "
        f"{len(failures)} failure(s)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
