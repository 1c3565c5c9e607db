# syntax=docker/dockerfile:1
#
# The LOOPZE certificate store server as a static binary on an empty image.
# Build:  docker build -t loopze-certs .
# The compose stack (docker-compose.yml) builds this file and runs it next to PostgreSQL.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source edit does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: the final stage has no libc to link against.
RUN CGO_ENABLED=0 go build -trimpath -o /out/loopze-certs ./cmd/server
# scratch has no useradd and no /data; prepare an owned, empty data directory here.
RUN mkdir -p /out/data && chown 65532:65532 /out/data && chmod 0700 /out/data

FROM scratch
COPY --from=build /out/loopze-certs /loopze-certs
COPY --from=build --chown=65532:65532 /out/data /data
# Listen on every interface inside the container (the binary defaults to loopback);
# keep state in /data, a volume in docker-compose.yml.
ENV LOOPZE_ADDR=0.0.0.0:8080 \
    LOOPZE_DATA_DIR=/data \
    LOOPZE_LOG_FORMAT=json
# Numeric, because scratch has no /etc/passwd to resolve a name in.
USER 65532:65532
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["/loopze-certs"]
CMD ["serve"]
