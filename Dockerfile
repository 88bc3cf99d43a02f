# The Starcite gateway. Build from the repository root: docker build -t starcite .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p gateway --bin starcite

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 starcite \
    && install -d -o starcite /var/lib/starcite/catalog
COPY --from=build /src/target/release/starcite /usr/local/bin/starcite
USER starcite
# The catalog view: kept across restarts, a gateway resumes it instead of rebuilding it.
ENV STARCITE_CATALOG_DIR=/var/lib/starcite/catalog
VOLUME /var/lib/starcite/catalog
# Inside a container the gateway must listen on all interfaces; publish the port on loopback.
ENV STARCITE_LISTEN=0.0.0.0:4000
EXPOSE 4000
HEALTHCHECK --interval=5s --timeout=2s --retries=12 CMD curl -fsS http://127.0.0.1:4000/health/ready || exit 1
CMD ["starcite"]
