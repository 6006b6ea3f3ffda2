FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams streams
COPY schemas schemas
COPY topics topics
COPY analytics analytics
COPY examples examples
RUN pip install --no-cache-dir .
ENTRYPOINT ["fallback"]
CMD ["worker", "--config", "/config/fallback.yaml"]
