# zai-dash container image. Build: docker build -t zai-dash:$(cat VERSION) .
# Checked without a container engine by scripts/check-dockerfile (COPY sources exist, the build
# command is CI's) and by checkov (scripts/check-manifests).

# Build stage: the same locked release build CI checks.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs VERSION ./
COPY src ./src
COPY templates ./templates
COPY static ./static
COPY benches ./benches
RUN cargo build --release --locked

# Runtime stage: glibc plus CA certificates (for https:// targets), nothing else.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin zai-dash \
 && mkdir /data \
 && chown 10001:10001 /data
COPY --from=build /src/target/release/zai-dash /usr/local/bin/zai-dash
USER 10001:10001
# SCRAPE_TARGETS has no default on purpose: pass it with -e (or a ConfigMap) at run time.
ENV LISTEN_ADDR=:8080 \
    DB_PATH=/data/zai-dash.db \
    LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["zai-dash", "healthcheck"]
ENTRYPOINT ["zai-dash"]
CMD ["serve"]
