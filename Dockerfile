# ae-denoise service image: FastAPI + onnxruntime with the shipped models baked in.
# Classic Dockerfile syntax only, so that both the legacy builder (`docker build`) and BuildKit
# (`docker compose build`) build it. See docs/deployment.md.

# ---- deps: a virtual environment with the service's runtime dependencies only (no torch) ----
FROM python:3.11-slim AS deps

# onnxruntime (CPU) by default; `onnxruntime-gpu` (optionally with its `[cuda,cudnn]` extra) for the
# gpu profile. Both wheels provide the same `onnxruntime` module.
ARG ONNXRUNTIME_PACKAGE=onnxruntime
# Optional extras of pyproject.toml: `--build-arg EXTRAS=[ray]` builds the image that KubeRay runs
# (deploy/k8s/kuberay, docs/scale-out.md); the default image has no Ray.
ARG EXTRAS=""

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# binutils for `strip`: some wheels ship their extension modules with debug symbols.
# Debian's versions move with security updates, so they are not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
WORKDIR /src

# The dependencies come from the lock alone (requirements/service.txt: every version pinned, every
# file's sha256 checked; `make lock` refreshes it from pyproject.toml), so that a code change reuses
# this layer. pip byte-compiles what it installs (faster cold start). Then the image diet, to stay
# well under 400 MB: the packages' own test suites (numpy's alone is 17 MB), debug symbols (uvloop: 11 MB), and
# the venv's pip and setuptools are never used at run time. The `*.libs` folders hold libraries that
# auditwheel patched, which strip could corrupt, so they are left alone.
# EXTRAS (e.g. [ray]) are resolved from pyproject.toml on top of the lock: the default image has none.
COPY requirements/service.txt ./requirements/
COPY pyproject.toml ./
# hadolint ignore=DL3013
RUN /opt/venv/bin/pip install --require-hashes -r requirements/service.txt \
    && if [ -n "$EXTRAS" ]; then \
           mkdir service contract && touch service/__init__.py contract/__init__.py README.md \
           && /opt/venv/bin/pip install ".${EXTRAS}" && /opt/venv/bin/pip uninstall -y ae-denoise; \
       fi \
    && if [ "$ONNXRUNTIME_PACKAGE" != "onnxruntime" ]; then \
           /opt/venv/bin/pip uninstall -y onnxruntime && /opt/venv/bin/pip install "$ONNXRUNTIME_PACKAGE"; \
       fi \
    && mkdir -p /opt/ld.so.conf.d \
    && (find /opt/venv/lib/python3.11/site-packages/nvidia -type d -name lib 2>/dev/null || true) \
       > /opt/ld.so.conf.d/ae-nvidia.conf \
    && find /opt/venv/lib/python3.11/site-packages -type d -name tests -prune -exec rm -rf {} + \
    && find /opt/venv/lib/python3.11/site-packages -name '*.so' -not -path '*.libs/*' \
           -exec strip --strip-debug {} + \
    && /opt/venv/bin/pip uninstall -y setuptools pip \
    && rm -rf /src/requirements

# ---- app: the `service` package alone, staged under /staging/opt/venv ----
# Installed by the system pip into the pip-less venv (`--python`), under a separate root, so that
# the runtime stage copies only these few files on top of the cached dependency layer: a code change
# rebuilds a small layer. training/ is not in the build context, so only `service` is installed, and
# only its entry point is kept (the training commands need the `train` extra).
FROM deps AS app
COPY pyproject.toml ./
COPY service ./service
COPY contract ./contract
RUN touch README.md \
    && /usr/bin/python3 -m pip --python /opt/venv/bin/python install --no-deps --no-compile --root /staging . \
    && /opt/venv/bin/python -m compileall -q -s /staging -p / /staging/opt/venv \
    && find /staging/opt/venv/bin -name 'ae-*' ! -name ae-serve -delete

# ---- runtime: the venv, the models, a non-root user; no compiler, no torch, no pip ----
FROM python:3.11-slim AS runtime

ARG ONNXRUNTIME_PACKAGE=onnxruntime
LABEL org.opencontainers.image.title="ae-denoise" \
      org.opencontainers.image.description="Denoising autoencoders served by FastAPI + onnxruntime" \
      org.opencontainers.image.licenses="MIT" \
      ae-denoise.onnxruntime="${ONNXRUNTIME_PACKAGE}"

RUN groupadd --system --gid 10001 ae \
    && useradd --system --uid 10001 --gid ae --no-create-home --home-dir /app --shell /usr/sbin/nologin ae

COPY --from=deps /opt/venv /opt/venv
# The CUDA/cuDNN libraries that onnxruntime-gpu's pip extras bring, made known to the dynamic
# loader (the file is empty in the CPU image).
COPY --from=deps /opt/ld.so.conf.d/ae-nvidia.conf /etc/ld.so.conf.d/ae-nvidia.conf
RUN ldconfig
COPY models /app/models
# The Ray Serve application (deploy/ray): a few lines, importable only where Ray is installed.
COPY deploy/ray/ae_denoise_ray.py /app/ray/ae_denoise_ray.py
# Last, as it changes most often: the service package, its metadata and the `ae-serve` script.
COPY --from=app /staging/opt/venv /opt/venv

# AE_* are the service's settings (service/config.py); docs/deployment.md lists them.
# ORT_DISABLE_TELEMETRY: onnxruntime's Linux builds would otherwise try to persist a device id and
# upload usage events; a server must not.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    AE_HOST=0.0.0.0 \
    AE_PORT=8000 \
    AE_MODELS_DIR=/app/models \
    PYTHONPATH=/app/ray

WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8000

# Python instead of curl (the image has none); /readyz answers 200 only once every model is warm.
# Shell form on purpose (CMD-SHELL): it expands AE_PORT and maps any failure to exit status 1.
# hadolint ignore=DL3025
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('AE_PORT', '8000'), timeout=2).status == 200 else 1)" || exit 1

# Exec form, so that the server process itself receives SIGTERM and shuts down gracefully.
CMD ["ae-serve"]
