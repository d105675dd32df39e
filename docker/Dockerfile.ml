# syntax=docker/dockerfile:1
# Batch image for features, training, batch scoring and retraining: `churn <command>`.
# Build from the repository root:  docker build -f docker/Dockerfile.ml -t churn-ml .
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build stage: a virtualenv with the hashed runtime lock + the project ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements/main.txt requirements/main.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/main.txt
COPY pyproject.toml README.md ./
COPY churn churn
COPY jobs jobs
COPY training training
COPY service service
COPY feature_repo feature_repo
RUN pip install --no-cache-dir --no-deps . \
 && pip uninstall --yes pip

# ---- final stage ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS final
LABEL org.opencontainers.image.title="churn-platform-ml" \
      org.opencontainers.image.description="churn-platform batch jobs: features, training, scoring, retraining" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 churn \
 && useradd --system --no-log-init --uid 10001 --gid churn --home-dir /app --shell /usr/sbin/nologin churn \
 && mkdir -p /data /app \
 && chown churn:churn /data
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root feature_repo /app/feature_repo
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    CHURN_DATA_DIR=/data \
    CHURN_FEATURE_REPO=/app/feature_repo
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["churn"]
CMD ["--help"]
