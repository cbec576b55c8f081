# petrel in a container: `docker build -t petrel .` then, with your own config mounted,
#   docker run --cap-add NET_ADMIN -p 80:80 -p 443:443 -v $PWD/myconf:/app/config petrel
# (without a mount it starts the embedded demo config, which listens on 8080/8443).
# The official Node 24 image brings Node itself; the `node` devDependency that brings Node 24
# to non-Docker installs is left out by --omit=dev.
FROM node:24-bookworm-slim

# wireguard-go + wireguard-tools: the mesh between regions (the kernel module is not assumed);
# bird2: BGP anycast announcements; iproute2: addresses and routes on the tunnel interface;
# tini: PID 1 that forwards SIGTERM/SIGHUP to petrel and reaps orphaned grandchildren of
# process Machines (Node as PID 1 reaps only its own children).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates wireguard-tools wireguard-go bird2 iproute2 tini \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV NODE_ENV=production

# Dependencies first so that a source change does not reinstall them.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY bin/ bin/
COPY src/ src/
COPY config/ config/
COPY demo/ demo/
# The certificate store (config/petrel.toml: certs_dir = "../certs"): the self-signed default is
# written here at first start; mount a volume to keep ACME certificates across restarts.
RUN mkdir -p certs

# Public ports 80/443 (8080/8443 in the embedded demo config) and the admin listener. The demo
# config binds admin to 127.0.0.1: set [admin] address = "0.0.0.0:9091" (with a token) to reach
# it from outside the container.
EXPOSE 80 443 8080 8443 9091

# Runs as root: binding 80/443 and managing WireGuard interfaces need it (or the matching
# capabilities). `petrel start` reads config/petrel.toml, or --config PATH / $PETREL_CONFIG.
ENTRYPOINT ["/usr/bin/tini", "--", "node", "bin/petrel.js"]
CMD ["start"]
