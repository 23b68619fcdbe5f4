# syntax=docker/dockerfile:1
# sentops API image: CPU PyTorch, the package with its PostgreSQL driver, a non-root user.
# The model is NOT in the image: `sentops serve` resolves the alias (default `production`)
# in the MLflow registry at start and hot-reloads when it moves.
#
#   docker build -t sentops .
#   docker run -e MLFLOW_TRACKING_URI=http://mlflow:5000 \
#              -e SENTOPS_STORE__URL=postgresql+psycopg://user:pass@db/inference -p 8000:8000 sentops
#
# The same image runs every other command (`docker run sentops drift --json`, `... train
# --promote`) and the MLflow server itself (`--entrypoint mlflow sentops server ...`), so
# client and server always share one MLflow version. GPU image: docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a self-contained virtualenv in /opt/venv ---------------------------------
FROM ${PYTHON_IMAGE} AS build
# CPU wheels by default; a bare `torch` from PyPI would pull a multi-GB CUDA build.
# For CUDA: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first (its own layer: it changes least and weighs most)
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY sentiment_ops ./sentiment_ops
# torch is already satisfied, so this adds the rest from PyPI (CPU only) plus psycopg 3.
# DL3013 wants pinned pip installs: this is the local package; its pins are in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[postgres]" \
    && python -c "import psycopg, torch, sentiment_ops.cli.main"

# ---- runtime ------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sentops" \
      org.opencontainers.image.description="sentiment_ops: serve, monitor and retrain a sentiment classifier" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 sentops \
    && useradd --system --uid 10001 --gid sentops --create-home --home-dir /home/sentops sentops \
    && install -d -o 10001 -g 10001 /mlartifacts
COPY --from=build /opt/venv /opt/venv
COPY configs /etc/sentops
# Settings come from the environment (SENTOPS_<SECTION>__<KEY>, MLFLOW_TRACKING_URI);
# these are only the container's defaults. The bundled MiniLM needs no hub: set
# HF_HUB_OFFLINE=0 to train from a Hugging Face model id.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_NO_ADVISORY_WARNINGS=1 \
    SENTOPS_HOME=/home/sentops/.sentops \
    SENTOPS_SERVE__HOST=0.0.0.0 \
    SENTOPS_SERVE__PORT=8000
# numeric, so Kubernetes' runAsNonRoot can verify it
USER 10001:10001
WORKDIR /home/sentops
EXPOSE 8000
# /ready answers 200 only once a model version is loaded (503 before the first promotion).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('SENTOPS_SERVE__PORT', '8000'), timeout=4)"]
ENTRYPOINT ["sentops"]
CMD ["serve", "--host", "0.0.0.0"]
