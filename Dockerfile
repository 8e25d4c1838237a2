# syntax=docker/dockerfile:1
# The Warden image: console, REST API, agent endpoint and Kubernetes API gateway in one binary,
# the console's site (WASM, stylesheet, xterm.js) and kubectl for the web terminal's shell.
# Build from the repository root:
#
#   docker build -t warden:0.1.0 .
#
# The agent's image is agent/Dockerfile. The Helm chart in deploy/helm/warden runs this image.
ARG RUST_VERSION=1.95
ARG KUBECTL_VERSION=v1.32.4

# npm packages: xterm.js for the terminal page, binaryen's wasm-opt (Debian 12's is too old).
FROM node:20-bookworm-slim AS node
WORKDIR /src
COPY package.json package-lock.json ./
RUN PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund

# The release console (WASM) and server, built the way `./x test` builds them in CI.
FROM rust:${RUST_VERSION}-bookworm AS build
ENV WASM_BINDGEN_VERSION=0.2.130 \
    LEPTOS_OUTPUT_NAME=warden \
    CARGO_TERM_COLOR=never
RUN rustup target add wasm32-unknown-unknown \
 && cargo install wasm-bindgen-cli --version ${WASM_BINDGEN_VERSION}
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /src
COPY . .
COPY --from=node /src/node_modules ./node_modules
ENV PATH=/src/node_modules/.bin:$PATH
RUN CARGO_TARGET_DIR=/src/target ./x release \
 && mkdir -p /out/data /out/cli \
 && cp "target/$(rustc -vV | sed -n 's/^host: //p')/release/warden" /out/warden \
 && cp "target/$(rustc -vV | sed -n 's/^host: //p')/release/wardenctl" /out/cli/wardenctl \
 && strip /out/warden /out/cli/wardenctl

# kubectl, checked against the release's published SHA-256.
FROM debian:bookworm-slim AS kubectl
ARG KUBECTL_VERSION
ARG TARGETARCH=amd64
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSLo /kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl" \
 && curl -fsSLo /kubectl.sha256 "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/${TARGETARCH}/kubectl.sha256" \
 && echo "$(cat /kubectl.sha256)  /kubectl" | sha256sum -c - \
 && chmod 0755 /kubectl

# Distroless: no shell, no package manager, uid 65532. The web terminal runs kubectl directly
# (no shell in between), so nothing else is needed at run time.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/warden /usr/local/bin/warden
COPY --from=build /src/target/site /usr/share/warden/site
# wardenctl, served to signed-in users from My tools (a plain `wardenctl` is taken as a build
# for the image's own platform; mount builds named wardenctl-<os>-<arch> here for others).
COPY --from=build /out/cli /usr/share/warden/cli
COPY --from=kubectl /kubectl /usr/local/bin/kubectl
COPY --from=build --chown=65532:65532 /out/data /var/lib/warden
ENV WARDEN_SITE_ROOT=/usr/share/warden/site \
    WARDEN_DATA_DIR=/var/lib/warden \
    WARDEN_DATABASE_URL=sqlite:///var/lib/warden/warden.db?mode=rwc \
    WARDEN_HTTP_ADDR=0.0.0.0:3000 \
    WARDEN_GATEWAY_ADDR=0.0.0.0:8443 \
    WARDEN_KUBECTL=/usr/local/bin/kubectl \
    WARDEN_LOG_FORMAT=json
USER 65532:65532
VOLUME ["/var/lib/warden"]
EXPOSE 3000 8443
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/warden", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/warden"]
CMD ["serve"]
