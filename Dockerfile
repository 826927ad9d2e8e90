FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY replicator ./replicator
COPY schemas ./schemas
COPY connectors ./connectors
RUN pip install --no-cache-dir -e .
USER nobody
ENTRYPOINT []
CMD ["replicator", "run"]
