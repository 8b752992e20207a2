# tsnet's image: the root filesystem of the managed plugin (plugin/build.ts
# turns it into one; README, "Managed plugin").
#
#   docker build -t tsnet .                                            # public Node 20 base, npm registry
#   docker build --build-arg BASE_IMAGE=tsnet-base:local -t tsnet .    # a base made locally, no registry
#
# BASE_IMAGE must have node 20 (at /usr/local/bin, or on PATH) and npm, and
# either apt or iproute2, nftables, iptables, util-linux, conntrack,
# wireguard-tools and wireguard-go already installed. `npm run plugin:build -- --offline` makes such a base
# with debootstrap and puts the host's npm cache in plugin/npm-cache/.
#
# The final stage is not the base: it holds node, the tools tsnet runs, the
# shared libraries they load (plugin/rootfs.sh), production node_modules and
# tsnet bundled into one file - no apt, dpkg, perl or docs to ship and patch.
ARG BASE_IMAGE=node:20-bookworm-slim

FROM ${BASE_IMAGE} AS npm
WORKDIR /app
ENV NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false
# --prefer-offline takes what the npm cache has and asks the registry only
# for the rest; offline builds pass --offline (fail at once, no retries).
ARG NPM_FLAGS=--prefer-offline
COPY package.json package-lock.json ./
# Empty in git; offline builds fill it with an npm cache.
COPY plugin/npm-cache/ /root/.npm/
COPY plugin/lock-resolved.mjs /tmp/
RUN node /tmp/lock-resolved.mjs package-lock.json "$(npm config get registry)"

FROM npm AS build
RUN npm ci $NPM_FLAGS --ignore-scripts
COPY tsconfig.json ./
COPY src/ src/
# Bundled: loading ~300 small modules takes node 300-600 ms, a bundle about
# 100 ms, and dockerd dials a managed plugin's socket 500 ms after starting
# it, then only every 3 s (enable takes 0.6 s, or 3.6 s). --splitting keeps
# dynamic imports lazy (etcd3 loads only with etcd configured). --keep-names:
# code may test constructor.name (src/ipam/cidr.ts does). Packages that read
# files next to their code at run time (etcd3: its .proto files) stay
# external and load from node_modules.
RUN npm run build \
 && node_modules/.bin/esbuild dist/main.js --bundle --splitting --format=esm --platform=node --target=node20 \
      --keep-names --external:etcd3 --legal-comments=none --log-level=warning \
      --outdir=/app/bundle --out-extension:.js=.mjs \
      "--banner:js=import { createRequire as __tsnetRequire } from 'node:module'; const require = __tsnetRequire(import.meta.url);"

FROM npm AS deps
# Production dependencies only, without what no running plugin reads.
RUN npm ci --omit=dev $NPM_FLAGS --ignore-scripts \
 && find node_modules \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' -o -name '*.md' -o -name '*.markdown' \) -type f -delete \
 && find node_modules -depth -type d \( -name test -o -name tests -o -name __tests__ -o -name docs -o -name example -o -name examples -o -name benchmark -o -name benchmarks -o -name .github \) -exec rm -rf {} +

FROM ${BASE_IMAGE} AS system
COPY plugin/rootfs.sh /tmp/rootfs.sh
RUN sh /tmp/rootfs.sh /rootfs

FROM scratch
COPY --from=system /rootfs/ /
COPY --from=deps /app/node_modules/ /app/node_modules/
COPY --from=build /app/bundle/ /app/bundle/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /app
# The plugin's entrypoint comes from config.json; this one is for docker run.
ENTRYPOINT ["/usr/local/bin/node", "--max-semi-space-size=1", "--heap-growing-percent=20", "/app/bundle/main.mjs"]
