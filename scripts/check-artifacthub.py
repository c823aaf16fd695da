#!/usr/bin/env python3
"""Artifact Hub metadata against its documented fields (no schema is published for
either file): the repository file (artifacthub-repo.yml,
https://artifacthub.io/docs/topics/repositories/) and the chart's `artifacthub.io/*`
annotations (https://artifacthub.io/docs/topics/annotations/helm/). Unknown keys and
fields are errors; the CRDs listed must be the chart's (crds/), and every CRD example
must validate against its CRD's schema (unknown fields rejected, as the API server does).

  check-artifacthub.py artifacthub-repo.yml charts/counterstack
"""
import glob
import os
import re
import sys

import yaml

import crd_schema

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
BOOL = {"true", "false"}
CHANGE_KINDS = {"added", "changed", "deprecated", "removed", "fixed", "security"}
CAPABILITIES = {"Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot"}
# artifacthub.io/<key> for Helm charts: the documented ones.
ANNOTATIONS = {
    "changes", "containsSecurityUpdates", "crds", "crdsExamples", "images", "license", "links",
    "maintainers", "operator", "operatorCapabilities", "prerelease", "recommendations",
    "alternativeName", "screenshots", "signKey", "category",
}
CATEGORIES = {
    "ai-machine-learning", "database", "integration-delivery", "monitoring-logging", "networking",
    "security", "storage", "streaming-messaging",
}
errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")


def fields(obj, where, allowed, required=()):
    if not isinstance(obj, dict):
        err(where, "must be a mapping")
        return False
    for k in obj:
        if k not in allowed:
            err(where, f"unknown field {k!r}")
    for k in required:
        if obj.get(k) in (None, ""):
            err(where, f"missing {k!r}")
    return True


def url(value, where):
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        err(where, f"{value!r} is not a URL")


def repo_file(path):
    doc = yaml.safe_load(open(path)) or {}
    if not fields(doc, path, {"repositoryID", "owners", "ignore"}):
        return
    if "repositoryID" in doc and not UUID.match(str(doc["repositoryID"])):
        err(f"{path} repositoryID", "must be the UUID Artifact Hub gave the repository")
    for i, o in enumerate(doc.get("owners") or []):
        w = f"{path} owners[{i}]"
        if fields(o, w, {"name", "email"}, ("email",)) and not EMAIL.match(str(o.get("email"))):
            err(w, "email is not an address")
    for i, o in enumerate(doc.get("ignore") or []):
        fields(o, f"{path} ignore[{i}]", {"name", "version"}, ("name",))


def annotations(chart_dir):
    path = os.path.join(chart_dir, "Chart.yaml")
    chart = yaml.safe_load(open(path))
    crds = {}
    for f in glob.glob(os.path.join(chart_dir, "crds", "*.yaml")):
        for d in yaml.safe_load_all(open(f)):
            if d and d.get("kind") == "CustomResourceDefinition":
                crds[d["metadata"]["name"]] = d
    ann = {k: v for k, v in (chart.get("annotations") or {}).items() if k.startswith("artifacthub.io/")}
    for key, value in ann.items():
        name = key.split("/", 1)[1]
        w = f"{path} {key}"
        if name not in ANNOTATIONS:
            err(w, "not an Artifact Hub annotation")
            continue
        if not isinstance(value, str):
            err(w, "annotation values are strings (YAML text for lists)")
            continue
        if name in {"containsSecurityUpdates", "operator", "prerelease"}:
            if value not in BOOL:
                err(w, 'must be "true" or "false"')
            continue
        if name == "operatorCapabilities":
            if value not in CAPABILITIES:
                err(w, f"one of {sorted(CAPABILITIES)}")
            continue
        if name == "category":
            if value not in CATEGORIES:
                err(w, f"one of {sorted(CATEGORIES)}")
            continue
        if name in {"license", "alternativeName"}:
            if not value.strip() or "\n" in value:
                err(w, "one line")
            continue
        if name == "signKey":
            doc = yaml.safe_load(value)
            if fields(doc, w, {"fingerprint", "url"}, ("fingerprint", "url")):
                url(doc["url"], w)
            continue
        items = yaml.safe_load(value)
        if not isinstance(items, list) or not items:
            err(w, "a non-empty YAML list")
            continue
        for i, it in enumerate(items):
            wi = f"{w}[{i}]"
            if name == "images":
                if fields(it, wi, {"name", "image", "whitelisted", "platforms"}, ("name", "image")):
                    if ":" not in str(it["image"]).rsplit("/", 1)[-1] and "@" not in str(it["image"]):
                        err(wi, "image needs a tag or digest")
                    for p in it.get("platforms") or []:
                        if not re.match(r"^[a-z0-9]+/[a-z0-9]+(/v[0-9])?$", str(p)):
                            err(wi, f"platform {p!r} is not os/arch")
            elif name == "crds":
                if fields(it, wi, {"kind", "version", "name", "displayName", "description"},
                          ("kind", "version", "name", "displayName", "description")):
                    crd = crds.get(it["name"])
                    if not crd:
                        err(wi, f"{it['name']} is not a CRD of the chart ({sorted(crds)})")
                    elif crd["spec"]["names"]["kind"] != it["kind"] or it["version"] not in [
                            v["name"] for v in crd["spec"]["versions"]]:
                        err(wi, "kind or version differs from the chart's CRD")
            elif name == "crdsExamples":
                if not isinstance(it, dict) or "apiVersion" not in it or "kind" not in it:
                    err(wi, "a full object with apiVersion and kind")
                    continue
                group, _, version = it["apiVersion"].partition("/")
                match = [c for c in crds.values() if c["spec"]["group"] == group and c["spec"]["names"]["kind"] == it["kind"]]
                if not match:
                    err(wi, f"{it['apiVersion']} {it['kind']} is not a kind the chart's CRDs define")
                    continue
                versions = {v["name"]: v for v in match[0]["spec"]["versions"]}
                if version not in versions:
                    err(wi, f"version {version} not served")
                    continue
                for e in crd_schema.validator(match[0], version).iter_errors(it):
                    err(wi, f"{e.message} at {list(e.absolute_path)}")
            elif name == "changes":
                if isinstance(it, str):
                    continue  # the short form: plain descriptions
                if fields(it, wi, {"kind", "description", "links"}, ("kind", "description")):
                    if it["kind"] not in CHANGE_KINDS:
                        err(wi, f"kind must be one of {sorted(CHANGE_KINDS)}")
                    for j, link in enumerate(it.get("links") or []):
                        if fields(link, f"{wi}.links[{j}]", {"name", "url"}, ("name", "url")):
                            url(link["url"], f"{wi}.links[{j}]")
            elif name == "links":
                if fields(it, wi, {"name", "url"}, ("name", "url")):
                    url(it["url"], wi)
            elif name == "maintainers":
                fields(it, wi, {"name", "email"}, ("name",))
            elif name == "recommendations":
                if fields(it, wi, {"url"}, ("url",)):
                    url(it["url"], wi)
            elif name == "screenshots":
                if fields(it, wi, {"title", "url"}, ("title", "url")):
                    url(it["url"], wi)
    for required in ("images", "crds", "crdsExamples", "changes", "license"):
        if f"artifacthub.io/{required}" not in ann:
            err(path, f"artifacthub.io/{required} is missing (issue 19 asks for it)")


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    repo_file(argv[1])
    annotations(argv[2])
    for e in errors:
        print(f"check-artifacthub: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"check-artifacthub: {argv[1]} and {argv[2]}/Chart.yaml annotations: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
