#!/usr/bin/env python3
"""The krew plugin manifest: render the krew-release-bot template (.krew.yaml) for a tag
with the sha256 of real archives, and check a manifest against the fields krew documents.

  krew-manifest.py render TAG DIST_DIR [--template .krew.yaml]   # manifest on stdout
  krew-manifest.py check MANIFEST [--dist DIST_DIR]

`render` replaces `{{ .TagName }}` and each `{{addURIAndSha "URL" .TagName }}` (with
`uri: URL` and `sha256:` of DIST_DIR/<the URL's file name>) as krew-release-bot does.
`check` enforces the plugin manifest's documented schema
(https://krew.sigs.k8s.io/docs/developer-guide/plugin-manifest/, krew's
pkg/index/validation): apiVersion and kind, a valid plugin name, a semver `v` version,
the descriptions, platforms each with a selector, an https uri, a 64-hex sha256 and a bin
that one of its files provides; unknown fields are errors (krew decodes strictly). With
--dist it also checks every sha256 against the archive and that each archive holds the
files the platform copies.
"""
import hashlib
import os
import re
import sys
import tarfile

import yaml

API_VERSION = "krew.googlecontainertools.github.com/v1alpha2"
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
SEMVER = re.compile(r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
OS = {"linux", "darwin", "windows"}
ARCH = {"amd64", "arm64", "arm", "386", "ppc64le", "s390x"}
ADD_URI = re.compile(r'\{\{\s*addURIAndSha\s+"([^"]+)"\s+\.TagName\s*\}\}')
TAG = re.compile(r"\{\{\s*\.TagName\s*\}\}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def render(tag, dist, template):
    text = open(template).read()
    out = []
    for line in text.splitlines():
        m = ADD_URI.search(line)
        if m:
            url = TAG.sub(tag, m.group(1))
            archive = os.path.join(dist, url.rsplit("/", 1)[-1])
            if not os.path.isfile(archive):
                sys.exit(f"krew-manifest: no archive {archive} for {url}")
            indent = line[: m.start()]
            out.append(f"{indent}uri: {url}")
            out.append(f"{indent}sha256: {sha256(archive)}")
        else:
            out.append(TAG.sub(tag, line))
    return "\n".join(out) + "\n"


def check(doc, dist=None):
    errors = []

    def err(where, msg):
        errors.append(f"{where}: {msg}")

    def only(obj, where, allowed, required=()):
        if not isinstance(obj, dict):
            err(where, f"must be a mapping, not {type(obj).__name__}")
            return False
        for k in obj:
            if k not in allowed:
                err(where, f"unknown field {k!r}")
        for k in required:
            if k not in obj:
                err(where, f"missing {k!r}")
        return True

    if not only(doc, "manifest", {"apiVersion", "kind", "metadata", "spec"}, ("apiVersion", "kind", "metadata", "spec")):
        return errors
    if doc.get("apiVersion") != API_VERSION:
        err("apiVersion", f"must be {API_VERSION}")
    if doc.get("kind") != "Plugin":
        err("kind", "must be Plugin")
    meta = doc.get("metadata") or {}
    if only(meta, "metadata", {"name"}, ("name",)) and not NAME.match(str(meta.get("name", ""))):
        err("metadata.name", "must be lowercase letters, digits and dashes")
    spec = doc.get("spec") or {}
    allowed = {"version", "homepage", "shortDescription", "description", "caveats", "platforms"}
    if not only(spec, "spec", allowed, ("version", "shortDescription", "platforms")):
        return errors
    if not SEMVER.match(str(spec.get("version", ""))):
        err("spec.version", f"{spec.get('version')!r} is not a semantic version with a leading v")
    short = str(spec.get("shortDescription", ""))
    if not short or len(short) > 50 or "\n" in short:
        err("spec.shortDescription", "one line of at most 50 characters (krew-index)")
    if "homepage" in spec and not str(spec["homepage"]).startswith("https://"):
        err("spec.homepage", "must be an https URL")
    platforms = spec.get("platforms")
    if not isinstance(platforms, list) or not platforms:
        err("spec.platforms", "at least one platform")
        return errors
    seen = set()
    for i, p in enumerate(platforms):
        w = f"spec.platforms[{i}]"
        if not only(p, w, {"selector", "uri", "sha256", "files", "bin"}, ("selector", "uri", "sha256", "bin")):
            continue
        sel = p.get("selector") or {}
        if only(sel, f"{w}.selector", {"matchLabels", "matchExpressions"}):
            labels = sel.get("matchLabels") or {}
            if labels.get("os") not in OS or labels.get("arch") not in ARCH:
                err(f"{w}.selector.matchLabels", f"os in {sorted(OS)} and arch in {sorted(ARCH)}")
            key = (labels.get("os"), labels.get("arch"))
            if key in seen:
                err(f"{w}.selector", f"{key} matched twice")
            seen.add(key)
        uri = str(p.get("uri", ""))
        if not uri.startswith("https://"):
            err(f"{w}.uri", "must be an https URL")
        if not SHA256.match(str(p.get("sha256", ""))):
            err(f"{w}.sha256", "must be 64 lowercase hex digits")
        files = p.get("files") or []
        froms = []
        for j, f in enumerate(files):
            if only(f, f"{w}.files[{j}]", {"from", "to"}, ("from", "to")):
                froms.append(str(f["from"]))
        bin_ = str(p.get("bin", ""))
        if not bin_ or os.path.isabs(bin_) or ".." in bin_.split("/"):
            err(f"{w}.bin", "a relative path inside the plugin")
        elif files and not any(bin_ == os.path.basename(f) or bin_ == f for f in froms):
            err(f"{w}.bin", f"{bin_!r} is not among the files copied ({froms})")
        if dist and uri:
            archive = os.path.join(dist, uri.rsplit("/", 1)[-1])
            if not os.path.isfile(archive):
                err(f"{w}.uri", f"no archive {archive}")
                continue
            if sha256(archive) != p.get("sha256"):
                err(f"{w}.sha256", f"differs from {archive}")
            with tarfile.open(archive) as t:
                names = {n.lstrip("./") for n in t.getnames()}
            for f in froms:
                if f not in names:
                    err(f"{w}.files", f"{archive} has no {f}")
    return errors


def main(argv):
    if len(argv) >= 4 and argv[1] == "render":
        template = argv[argv.index("--template") + 1] if "--template" in argv else ".krew.yaml"
        sys.stdout.write(render(argv[2], argv[3], template))
        return 0
    if len(argv) >= 3 and argv[1] == "check":
        dist = argv[argv.index("--dist") + 1] if "--dist" in argv else None
        errors = check(yaml.safe_load(open(argv[2])), dist)
        for e in errors:
            print(f"krew-manifest: {argv[2]}: {e}", file=sys.stderr)
        if errors:
            return 1
        print(f"krew-manifest: {argv[2]}: ok")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
