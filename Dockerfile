# The replicator from its wheel: the build stage makes the wheel (schemas/ and connectors/
# packed inside it); the image installs the dependencies from requirements.lock, every
# file checked against its sha256 (a rebuild months later gets the same bytes), then the
# wheel alone, and runs as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY replicator ./replicator
COPY schemas ./schemas
COPY connectors ./connectors
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes --only-binary :all: -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels
WORKDIR /tmp
USER nobody
ENTRYPOINT []
CMD ["replicator", "run"]
