#!/usr/bin/env bash
# Entrypoint of the nlsq-flows worker image (infra/Dockerfile).
#
# With a command (what Docker and Kubernetes workers pass for each flow run, e.g.
# `prefect flow-run execute`), run it. Without one, start a process worker on
# $NLSQ_WORK_POOL so that this container is itself a GPU worker.
set -euo pipefail

if [[ $# -gt 0 ]]; then
    exec "$@"
fi

: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server this worker should poll}"
# Never pip-install at run time: everything the flows need is in the image.
exec prefect worker start \
    --pool "${NLSQ_WORK_POOL:-nlsq-gpu-process}" \
    --type process \
    --install-policy never \
    ${NLSQ_WORKER_LIMIT:+--limit "$NLSQ_WORKER_LIMIT"}
