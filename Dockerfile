# syntax=docker/dockerfile:1
#
# One image for every LearnFlow service; the service is chosen at run time:
#
#   docker build -t learnflow:dev .                                 # default target: runtime
#   docker build -t learnflow-sandbox:dev --target sandbox .        # + bubblewrap
#   docker build -t learnflow-concepts:dev --target concepts .      # + Node and Mermaid
#   docker run --rm -p 50057:50057 learnflow:dev mastery            # = learnflow serve mastery
#
# Stages: builder (venv with the project) -> base (non-root runtime) -> sandbox | concepts
# | runtime.
# `runtime` is the LAST stage on purpose, so a plain `docker build .` gives the general image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# Node for the concepts agent's Mermaid validator (Mermaid 11 needs Node >= 20).
ARG NODE_IMAGE=node:20-bookworm-slim

# --- builder: resolve and install everything into /opt/venv --------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, from pyproject alone, so editing code does not reinstall them.
# (All pinned dependencies ship manylinux wheels for 3.11: no compiler is needed.)
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the project itself. Copy only what the package is built from: the build context
# may hold a local .venv, .run (dev keys) or caches that must not reach the image.
COPY services ./services
COPY gen ./gen
RUN pip install --no-cache-dir . \
    && learnflow --help > /dev/null

# --- base: what every service runs on -------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot/runAsUser can verify it (10001).
RUN groupadd --system --gid 10001 learnflow \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin learnflow

# Owned by root and read-only to the service user: the code cannot be rewritten at run time.
COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# No EXPOSE: each service listens on its own catalogue port (or GRPC_PORT).
# No Docker HEALTHCHECK: compose and Kubernetes probe the gRPC health service instead
# (`learnflow probe <port>`, `grpc:` probes), per service and port.
HEALTHCHECK NONE

ENTRYPOINT ["learnflow", "serve"]
# CMD is the service name, given at run time (docker run ... <service>, compose `command`).

# --- sandbox: the runtime plus bubblewrap for running untrusted code -------------------
FROM base AS sandbox
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001

# --- concepts: the runtime plus Node and Mermaid's parser for diagram validation --------
FROM ${NODE_IMAGE} AS node

FROM base AS concepts
USER root
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
# The validator's package files ship inside the Python package; install its locked deps
# there (read-only to the service user afterwards, like the rest of the venv).
RUN cd "$(python -c 'import pathlib, services.concepts as c; print(pathlib.Path(c.__file__).parent / "mermaid")')" \
    && node /usr/local/lib/node_modules/npm/bin/npm-cli.js ci --no-audit --no-fund --loglevel=error \
    && rm -rf /root/.npm /usr/local/lib/node_modules/npm
USER 10001:10001

# --- runtime: every other service (default target, keep it last) ---------------------
FROM base AS runtime
