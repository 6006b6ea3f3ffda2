# The worker image: the package and its runtime dependencies only.  The embedded
# broker and chDB (the `embedded` extra) stay out: in compose the workers use
# Kafka and a ClickHouse server (examples/compose.yaml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --user-group fallback
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY schemas schemas
COPY topics topics
COPY analytics analytics
COPY examples examples
# .data: the worker's state and the digits models trained on first use.
RUN pip install . && mkdir .data && chown fallback:fallback .data

USER fallback
# worker.web_port: /health/, /metrics, /report/ (tests/deploy checks it matches the config)
EXPOSE 6066
# Healthy once /health/ says ready (partitions assigned, nothing stalled): it answers 503 before.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/health/', timeout=4)"]
ENTRYPOINT ["fallback"]
CMD ["worker", "--config", "/config/fallback.yaml"]
