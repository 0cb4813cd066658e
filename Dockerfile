# Twofold's image: both binaries, `twofold` (the API, and its admin commands) and
# `twofold-mailer`, on a small Debian runtime as an unprivileged user.
#
#   docker build -t twofold:local .
#   docker run --rm twofold:local --help
#
# The build stage runs the same release build as CI (`.ci/run` checks that the line below is
# the command it runs itself).

FROM rust:1.95-slim-bookworm AS build
# webauthn-rs (passkeys) links OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace

FROM debian:bookworm-slim
# curl is for health checks (`curl -fsS http://127.0.0.1:5555/health/ready`); libssl3 is
# the OpenSSL the passkeys' WebAuthn library links.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/twofold \
        --shell /usr/sbin/nologin twofold \
    && install -d -o twofold -g twofold -m 0700 /var/lib/twofold /var/lib/twofold/keys \
        /var/lib/twofold/mail-key
COPY --from=build /src/target/release/twofold /src/target/release/twofold-mailer /usr/local/bin/
# Numeric, so that an orchestrator can verify the user is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/twofold
ENV TWOFOLD_ADDR=0.0.0.0:5555 \
    TWOFOLD_LOG_FORMAT=json
EXPOSE 5555
ENTRYPOINT ["twofold"]
CMD ["serve"]
