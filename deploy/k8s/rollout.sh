#!/usr/bin/env bash
# Ordered rollout of an overlay with plain kubectl (Argo CD users don't need this: the
# sync-wave / hook annotations give the same order).
#
#   deploy/k8s/rollout.sh deploy/k8s/overlays/dev
#
# 1. namespace, config, secrets and (if the overlay has them) the data-store CRs;
#    wait until Postgres and Redis report ready;
# 2. the migration Job (the previous one is deleted first: a Job's template is
#    immutable); wait until it has completed;
# 3. everything else, then wait for the rollouts.
set -euo pipefail

overlay=${1:?usage: $0 deploy/k8s/overlays/<env>}
timeout=${ROLLOUT_TIMEOUT:-15m}
ns=$(sed -n 's/^namespace:[[:space:]]*//p' "$overlay/kustomization.yaml")
if [[ -z "$ns" ]]; then
  echo "no 'namespace:' in $overlay/kustomization.yaml" >&2
  exit 2
fi

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT
kubectl kustomize "$overlay" >"$rendered"

step() { printf '\n== %s\n' "$*"; }

step "config, secrets, data stores"
kubectl apply -f "$rendered" -l 'app.kubernetes.io/component notin (api,web,worker,migration)'
if grep -q '^kind: Cluster$' "$rendered"; then
  kubectl -n "$ns" wait --for=condition=Ready cluster.postgresql.cnpg.io/obol-pg --timeout="$timeout"
fi
if grep -q '^kind: RedisCluster$' "$rendered"; then
  kubectl -n "$ns" wait --for=jsonpath='{.status.state}'=Ready \
    rediscluster.redis.redis.opstreelabs.in/obol-redis --timeout="$timeout"
fi

step "migrations"
kubectl -n "$ns" delete job obol-migrate --ignore-not-found --wait=true
kubectl apply -f "$rendered" -l app.kubernetes.io/component=migration
if ! kubectl -n "$ns" wait --for=condition=Complete job/obol-migrate --timeout="$timeout"; then
  kubectl -n "$ns" logs job/obol-migrate --tail=100 || true
  echo "migration Job did not complete; workloads left untouched" >&2
  exit 1
fi

step "workloads"
kubectl apply -f "$rendered"
for workload in deployment/obol-wallet deployment/obol-pricing deployment/obol-costs \
  deployment/obol-portal-bff statefulset/obol-wallet-writebehind; do
  kubectl -n "$ns" rollout status "$workload" --timeout="$timeout"
done
