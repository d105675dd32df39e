#!/usr/bin/env bash
# The Spark image's entrypoint. Spark on Kubernetes (spark-submit in cluster mode, the Spark
# Operator) starts its pods with a first argument naming the role:
#   driver ARGS...   the driver: spark-submit in client mode inside the pod, on the pod's address
#                    (SPARK_DRIVER_BIND_ADDRESS, which Spark sets from the pod IP)
#   executor         an executor: Spark's Kubernetes executor backend, configured by the
#                    SPARK_EXECUTOR_* / SPARK_DRIVER_URL / SPARK_JAVA_OPT_* variables Spark sets
# Anything else is the ml image's interface: `churn ARGS...`.
set -euo pipefail

spark_classpath() {
  local cp="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*"
  if [[ -n "${SPARK_EXTRA_CLASSPATH:-}" ]]; then cp="$cp:$SPARK_EXTRA_CLASSPATH"; fi
  if [[ -n "${HADOOP_CONF_DIR:-}" ]]; then cp="$HADOOP_CONF_DIR:$cp"; fi
  # Files shipped with the application land in the working directory.
  printf '%s:%s' "$cp" "$PWD"
}

role=${1:-}
case "$role" in
  driver)
    shift
    exec "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:?Spark sets it to the pod IP}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    java_opts=()
    for name in "${!SPARK_JAVA_OPT_@}"; do java_opts+=("${!name}"); done
    exec "$JAVA_HOME/bin/java" "${java_opts[@]}" \
      "-Xms${SPARK_EXECUTOR_MEMORY:?}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
      -cp "$(spark_classpath)" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL:?}" \
      --executor-id "${SPARK_EXECUTOR_ID:?}" \
      --cores "${SPARK_EXECUTOR_CORES:?}" \
      --app-id "${SPARK_APPLICATION_ID:?}" \
      --hostname "${SPARK_EXECUTOR_POD_IP:?}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "${SPARK_EXECUTOR_POD_NAME:-}" \
      "$@"
    ;;
  *)
    exec churn "$@"
    ;;
esac
