# kvs server image: two single-file executables on the official Bun image.
# Build:  docker build -t kvs .
# Run:    docker run -p 7070:7070 -e KV_TABLE=... -e KV_KMS_KEY_ID=... -e AWS_REGION=... kvs
# The image runs AWS mode only (no Java, no DynamoDB Local); see template.yaml.

FROM oven/bun:1.3 AS build
WORKDIR /src
COPY package.json bun.lock bunfig.toml tsconfig.json ./
RUN bun install --frozen-lockfile --ignore-scripts
COPY src ./src
COPY client ./client
RUN bun run build

FROM oven/bun:1.3-slim
WORKDIR /app
COPY --from=build /src/dist/kvs /src/dist/kvs-client /app/
# The base image's unprivileged user; the server needs no writable files in AWS mode.
USER bun
ENV KV_HOST=0.0.0.0 KV_PORT=7070 KV_HTTP_PORT=7080 KV_ADMIN_PORT=7071 KV_LOG_LEVEL=info KV_LOG_FORMAT=json
EXPOSE 7070 7080 7071
# Liveness only (/healthz on the admin port): a DynamoDB outage must not make
# every task unhealthy at once. The load balancer checks readiness (/readyz).
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/app/kvs-client", "health", "--admin-port", "7071"]
# Exec form: the server is PID 1 and gets SIGTERM itself, which starts a graceful drain.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/kvs"]
