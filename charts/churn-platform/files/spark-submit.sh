#!/bin/sh
# One daily step as a Spark Operator application: create the chart's SparkApplication for this run
# (manifest /spark/<step>.yaml, from templates/spark.yaml) and wait until the operator reports it
# finished. Exit 0 only on COMPLETED, so a failed application stops the chain like a failed step.
#
#   sh /spark/submit.sh <step>      with JOB_NAME, POD_NAME, POD_UID from the downward API,
#                                   SPARK_TIMEOUT_SECONDS and SPARK_POLL_SECONDS from the chart
#
# The name is the daily Job's plus the step: a retried pod of the same Job first removes the
# application its previous attempt left (every step is idempotent), another day's Job gets its own.
set -eu

step=${1:?usage: submit.sh <step>}
manifest=${SPARK_APPS_DIR:-/spark}/$step.yaml
[ -r "$manifest" ] || { echo "spark-submit: no manifest $manifest" >&2; exit 2; }
: "${JOB_NAME:?}" "${POD_NAME:?}" "${POD_UID:?}"
timeout=${SPARK_TIMEOUT_SECONDS:-7200}
poll=${SPARK_POLL_SECONDS:-15}
# A SparkApplication's name becomes its driver pod's (plus "-driver"): keep it a DNS label.
name=$(printf '%s' "$JOB_NAME" | cut -c1-40 | sed 's/-*$//')-$step

kubectl delete sparkapplication "$name" --ignore-not-found --wait=true
sed -e "s|__NAME__|$name|" -e "s|__POD_NAME__|$POD_NAME|" -e "s|__POD_UID__|$POD_UID|" "$manifest" \
  | kubectl create -f -
echo "spark-submit: $name submitted; waiting up to ${timeout}s"

deadline=$(($(date +%s) + timeout))
last=""
while :; do
  state=$(kubectl get sparkapplication "$name" -o jsonpath='{.status.applicationState.state}') || state=""
  if [ "$state" != "$last" ]; then
    echo "spark-submit: $name ${state:-(no state yet)}"
    last=$state
  fi
  case $state in
    COMPLETED)
      exit 0
      ;;
    FAILED | SUBMISSION_FAILED)
      kubectl get sparkapplication "$name" -o jsonpath='{.status.applicationState.errorMessage}' >&2 || true
      echo >&2
      echo "spark-submit: $name $state; driver log: kubectl logs ${name}-driver" >&2
      exit 1
      ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "spark-submit: $name not finished after ${timeout}s: deleting it" >&2
    kubectl delete sparkapplication "$name" --ignore-not-found --wait=false || true
    exit 1
  fi
  sleep "$poll"
done
