# CI-only stand-ins for the compose file's redis and nginx images, for machines that reach
# Debian's mirror but no image registry. deploy/smoke.sh builds them FROM its debootstrap
# base and passes them as REDIS_IMAGE / NGINX_IMAGE; compose.yaml and the shipped Dockerfile
# are used unchanged. Not for production: use the official images there.
ARG BASE
FROM ${BASE} AS services
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      redis-server nginx-light >/dev/null \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

# Like the official redis image: `redis-server ARGS` without a config file runs with
# protected mode off (the compose network is the boundary) as the redis user, in /data
# (owned by it, so a named volume mounted there starts owned by it too).
FROM services AS redis
RUN printf '%s\n' '#!/bin/sh' \
      'if [ "${1:-}" = redis-server ]; then shift; set -- redis-server --protected-mode no "$@"; fi' \
      'exec setpriv --reuid=redis --regid=redis --init-groups "$@"' \
      > /usr/local/bin/redis-entrypoint \
 && chmod 755 /usr/local/bin/redis-entrypoint \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
CMD ["redis-server"]

# Like the official nginx image: logs to the container's stdout/stderr, configuration from
# /etc/nginx/conf.d/*.conf, SIGQUIT for a graceful stop.
FROM services AS nginx
RUN rm -f /etc/nginx/sites-enabled/default \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
