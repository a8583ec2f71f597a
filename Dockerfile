# protosessions: the Bytewax dataflow (GA4 hits -> sessions) as a container image.
#
#   docker build -t protosessions:0.1.0 .
#   docker run --rm -e PROTOSESSIONS_KAFKA_BROKERS=broker:9092 protosessions:0.1.0
#
# Configured only by environment variables: PROTOSESSIONS_* (see
# flows/options.py) and Bytewax's own BYTEWAX_* (see k8s/README.md).
# k8s/statefulset.yaml runs this image with exactly the CMD below;
# tests/test_k8s_manifests.py checks that they stay equal.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BYTEWAX_DATAFLOW_API_ENABLED=true \
    BYTEWAX_DATAFLOW_API_PORT=3030 \
    BYTEWAX_DATAFLOW_API_CACHE_PATH=/tmp

# A fixed numeric non-root user, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 protosessions \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin protosessions

# Install the project and its pinned runtime dependencies (no dev extra) into
# site-packages, then drop the sources: the image runs the installed package.
COPY pyproject.toml README.md /tmp/src/
COPY protosessions /tmp/src/protosessions
COPY flows /tmp/src/flows
RUN pip install /tmp/src \
 && rm -rf /tmp/src \
 && python -c "import bytewax.run, confluent_kafka, orjson, prometheus_client, flows.options" \
 && protosessions --help > /dev/null

# Empty and owned by root: bytewax.run puts the working directory on sys.path
# and imports flows.sessions from site-packages. Nothing is written here: the
# API server writes its dataflow.json to BYTEWAX_DATAFLOW_API_CACHE_PATH (its
# default "." would fail on a read-only root filesystem and stop the process).
WORKDIR /app

USER 10001:10001

# 9999: Bytewax cluster communication between processes; 3030: Bytewax
# dataflow API (Prometheus /metrics, /dataflow).
EXPOSE 9999 3030

CMD ["python", "-m", "flows.launch"]
