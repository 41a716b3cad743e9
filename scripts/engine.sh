#!/usr/bin/env bash
# The container engine for `make engine` / `make test-containers`: `up` starts it (if it needs
# starting), `env` prints the variables that point the docker CLI at it.
#
# - `docker info` answers (Docker Desktop, a system dockerd, a DOCKER_HOST already set): that one;
#   nothing to start, nothing to export.
# - otherwise ../shared/tools/container-engine, where a machine provides one beside the checkout.
# - otherwise: a message saying what to install, and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
command="${1:-}"
case "$command" in up | env) ;; *) echo "usage: $0 up|env" >&2; exit 2 ;; esac

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    exit 0  # a working engine: `up` has nothing to do, `env` nothing to print
fi
fallback=../shared/tools/container-engine
if [ -f "$fallback" ]; then
    exec bash "$fallback" "$command"
fi
echo "no container engine: 'docker info' fails and $fallback is absent; install Docker (docs/deployment.md)" >&2
exit 1
