# The replicator from its wheel: the build stage makes the wheel (schemas/ and connectors/
# packed inside it), the image installs only that, and runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY replicator ./replicator
COPY schemas ./schemas
COPY connectors ./connectors
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /tmp
USER nobody
ENTRYPOINT []
CMD ["replicator", "run"]
