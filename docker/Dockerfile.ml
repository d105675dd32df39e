# syntax=docker/dockerfile:1
# Batch image for features, training, batch scoring and retraining: `churn <command>`.
# Build from the repository root:  docker build -f docker/Dockerfile.ml -t churn-ml .
# The same image with Spark (CHURN_ENGINE=spark; the chart's Spark Operator applications):
#   docker build -f docker/Dockerfile.ml --target spark -t churn-spark .
# Air-gapped (no package index; docs/deploy.md):
#   scripts/wheelhouse.sh WH requirements/main.txt requirements/build.txt [requirements/spark.txt]
#   docker build --build-context wheelhouse=WH --build-arg PYTHON_IMAGE=<mirrored base> ...
ARG PYTHON_IMAGE=python:3.11-slim
# The `spark` target's Java: a JRE at /opt/java/openjdk, copied into the Python base as Eclipse
# Temurin's images document for other bases. Stages a target does not use are not built or pulled.
ARG JRE_IMAGE=eclipse-temurin:17-jre

FROM ${JRE_IMAGE} AS jre

# ---- wheels: from the package index, each checked against the lock's hashes. A build context
# named `wheelhouse` (a folder made by scripts/wheelhouse.sh) replaces this stage, and then
# nothing below reaches the network.
FROM ${PYTHON_IMAGE} AS download
COPY requirements/main.txt requirements/build.txt requirements/spark.txt /tmp/locks/
# spark.txt keeps pyspark as a source distribution (its `--no-binary` line): PyPI has no wheel of it.
RUN python -m pip download --no-cache-dir --disable-pip-version-check --require-hashes \
      --only-binary=:all: --no-deps --dest /wheels \
      -r /tmp/locks/main.txt -r /tmp/locks/build.txt -r /tmp/locks/spark.txt

FROM scratch AS wheelhouse
COPY --from=download /wheels /

# ---- build stage: a virtualenv with the hashed runtime lock + the project ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (only the lock file), so code changes do not rebuild this layer.
COPY requirements/main.txt requirements/main.txt
RUN --mount=type=bind,from=wheelhouse,target=/wheels \
    pip install --no-cache-dir --require-hashes -r requirements/main.txt
COPY pyproject.toml README.md ./
COPY churn churn
COPY cli cli
COPY jobs jobs
COPY training training
COPY service service
COPY feature_repo feature_repo
# The project's build backend comes from the wheelhouse too (requirements/build.txt).
RUN --mount=type=bind,from=wheelhouse,target=/wheels \
    pip install --no-cache-dir --no-deps . \
 && pip uninstall --yes pip

# ---- the ml image --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS ml
LABEL org.opencontainers.image.title="churn-platform-ml" \
      org.opencontainers.image.description="churn-platform batch jobs: features, training, scoring, retraining" \
      org.opencontainers.image.licenses="Apache-2.0"
# LightGBM links the system OpenMP runtime; a base image that already has it needs no package index.
# hadolint ignore=DL3008
RUN (python -c "import ctypes.util, sys; sys.exit(ctypes.util.find_library('gomp') is None)" \
      || (apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*)) \
 && groupadd --system --gid 10001 churn \
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

# ---- the `spark` target: the ml image plus Java, pyspark and Spark's Kubernetes entrypoint --------
# pyspark is built from its sdist with the wheelhouse's setuptools, then copied into the ml venv.
FROM ${PYTHON_IMAGE} AS spark-build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels
COPY requirements/spark.txt /tmp/locks/spark.txt
RUN --mount=type=bind,from=wheelhouse,target=/wheels \
    python -m venv /tmp/pip \
 && /tmp/pip/bin/pip install --no-deps --require-hashes --target /opt/site -r /tmp/locks/spark.txt \
 && rm -rf /opt/site/bin /opt/site/share

FROM ml AS spark
LABEL org.opencontainers.image.title="churn-platform-spark" \
      org.opencontainers.image.description="churn-platform batch jobs on Spark: the ml image with Java, pyspark and the Spark on Kubernetes entrypoint"
COPY --from=jre /opt/java/openjdk /opt/java/openjdk
COPY --from=spark-build /opt/site/ /opt/venv/lib/python3.11/site-packages/
COPY --chmod=0755 docker/spark-entrypoint.sh /opt/spark-entrypoint.sh
ENV JAVA_HOME=/opt/java/openjdk \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    PATH=/opt/java/openjdk/bin:$PATH
ENTRYPOINT ["/opt/spark-entrypoint.sh"]
CMD ["--help"]

# The default target is the ml image.
FROM ml AS final
