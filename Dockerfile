# murmur in a container, built without any registry: an image from scratch around a fully
# static `murmur` binary built on the host. Build it first (see README, "Cluster"):
#
#   RUSTFLAGS='-C target-feature=+crt-static' \
#     cargo build --release --target x86_64-unknown-linux-gnu
#   docker build -t murmur:local .
#
# (another target dir: --build-arg BINARY=<its path from the repo root>, and list that path
# in .dockerignore.) The binary is static-pie: glibc linked in, bundled SQLite, and a pure-Rust
# DNS resolver (hickory) for /dns4 peers, so no libc, shell or NSS is needed. What the image
# holds, and nothing else:
#   - /murmur, the binary; it is also the healthcheck (`murmur health`);
#   - /data, the data dir, owned by the unprivileged user 10001, so that a named volume
#     mounted there starts out writable by it (Docker copies the ownership into a new volume);
#     the node narrows it to 0700 at start, and creates every file in it 0600;
#   - /tmp, owned by that user: SQLite's temp directory (large sorts, temp tables); without
#     it SQLite falls back to the working directory, /, which the user cannot write.
# Left out on purpose:
#   - CA certificates: murmur speaks no TLS (peers use pnet + noise, the API is plain HTTP);
#   - /etc/passwd: the user is given by number and nothing in murmur looks up user names;
#   - /etc/resolv.conf and /etc/hosts: Docker mounts its own into every container (on a
#     user-defined network, resolv.conf points at Docker's DNS, which knows the services'
#     names); the resolver in the binary reads them.

ARG BINARY=target/x86_64-unknown-linux-gnu/release/murmur

FROM scratch
ARG BINARY
# A scratch image has no shell to mkdir with: /data and /tmp come from the context, as two
# directories holding an empty .keep file each.
COPY --chown=10001:10001 tests/cluster/rootfs/ /
COPY ${BINARY} /murmur
USER 10001:10001
# Container defaults: data on the volume, peers on a fixed port (so that /dns4/<service>/tcp/7000
# peers work), the API on all interfaces of the container so that it can be published. Every
# API call but /v1/health needs the token the node writes to /data/api.token on its first
# start (`docker cp <container>:/data/api.token .`); publish the API on the host's loopback
# only all the same (-p 127.0.0.1:7700:7700). Give the library secret as MURMUR_LIBRARY_SECRET
# (-e MURMUR_LIBRARY_SECRET="$(cat library.key)"): a secret file mounted from the host keeps
# the host's owner and mode, and uid 10001 could read it only if everyone could.
# NO_COLOR: the logs go to Docker's log driver, not a terminal, so no ANSI escapes in them.
ENV MURMUR_DATA_DIR=/data \
    MURMUR_LISTEN=/ip4/0.0.0.0/tcp/7000 \
    MURMUR_API=0.0.0.0:7700 \
    NO_COLOR=1
VOLUME ["/data"]
EXPOSE 7000 7700
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/murmur", "health", "--api", "127.0.0.1:7700"]
ENTRYPOINT ["/murmur"]
CMD ["run"]
