# edgefarm: one image for the API, the workers and beat (docker-compose.yml picks the command).
FROM python:3.11-slim-bookworm

# g++ builds the native runner against the TVM wheel on first use; procps gives pgrep/ps.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ procps libusb-1.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/edgefarm
COPY pyproject.toml README.md alembic.ini ./
COPY harness ./harness
COPY workers ./workers
COPY api ./api
COPY migrations ./migrations
RUN pip install --no-cache-dir . "adb-shell[usb]"

ENV EDGEFARM_HOME=/var/lib/edgefarm
VOLUME /var/lib/edgefarm
EXPOSE 8000
CMD ["edgefarm", "--help"]
