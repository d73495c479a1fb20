# edgefarm: one image for the API, the workers and beat (docker-compose.yml picks the command).
# Installed as a user installs it: a wheel, installed non-editable, no source tree in the image.
# The wheel carries what runs need besides Python: the runner's C++ source, the BYOC reference
# driver's C sources, and the Alembic migrations (as harness/db/migrations).
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY harness ./harness
COPY workers ./workers
COPY api ./api
COPY migrations ./migrations
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.11-slim-bookworm

# g++ (with gcc and binutils) builds the native runner against the TVM wheel and the BYOC
# reference driver on first use; procps gives pgrep/ps.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ procps libusb-1.0-0 \
    && rm -rf /var/lib/apt/lists/*

COPY --from=wheel /dist /tmp/dist
RUN pip install --no-cache-dir /tmp/dist/edgefarm-*.whl "adb-shell[usb]" && rm -rf /tmp/dist
# The web pages' charting library (uPlot) from the npm registry, checked against its pinned
# integrity, into the installed package (api/web/static/vendor/): the farm serves it itself.
RUN python -m api.web.assets

ENV EDGEFARM_HOME=/var/lib/edgefarm
VOLUME /var/lib/edgefarm
WORKDIR /var/lib/edgefarm
EXPOSE 8000
CMD ["edgefarm", "--help"]
