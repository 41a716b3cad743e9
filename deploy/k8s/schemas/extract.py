"""Extract one version's OpenAPI v3 schema from a CustomResourceDefinition, without descriptions.

Run once, by hand, when a CRD is updated (README.md beside this file says from where):

    python deploy/k8s/schemas/extract.py <crd.yaml> <version> > deploy/k8s/schemas/<kind>.<version>.json

Descriptions are dropped (they are most of a CRD's size and validate nothing); every other keyword
is kept as published.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: without_descriptions(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [without_descriptions(value) for value in node]
    return node


def main() -> None:
    path, version = sys.argv[1], sys.argv[2]
    with open(path) as f:
        crd = yaml.safe_load(f)
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = without_descriptions(entry["schema"]["openAPIV3Schema"])
    document = {
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "version": version,
        "openAPIV3Schema": schema,
    }
    sys.stdout.write(json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
