// Validates rendered manifests (kubectl kustomize output on stdin) offline:
//  1. every object against the official Kubernetes OpenAPI schemas (kubernetes-models);
//  2. recpipe's own invariants: probes, requests and limits on every container, non-root
//     and read-only root filesystem, and the shard arithmetic of the retrieval tier.
// Usage: kubectl kustomize k8s/overlays/prod | node validate.mjs prod
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as core from "kubernetes-models/v1";
import * as apps from "kubernetes-models/apps/v1";
import * as batch from "kubernetes-models/batch/v1";
import * as policy from "kubernetes-models/policy/v1";
import * as autoscaling from "kubernetes-models/autoscaling/v2";

const overlay = process.argv[2] || "?";
const kinds = {
  "v1/ConfigMap": core.ConfigMap,
  "v1/Service": core.Service,
  "v1/PersistentVolumeClaim": core.PersistentVolumeClaim,
  "apps/v1/Deployment": apps.Deployment,
  "apps/v1/StatefulSet": apps.StatefulSet,
  "batch/v1/Job": batch.Job,
  "policy/v1/PodDisruptionBudget": policy.PodDisruptionBudget,
  "autoscaling/v2/HorizontalPodAutoscaler": autoscaling.HorizontalPodAutoscaler,
};

const errors = [];
const fail = (msg) => errors.push(`${overlay}: ${msg}`);

const docs = parseAllDocuments(readFileSync(0, "utf8")).map((d) => d.toJSON()).filter(Boolean);
if (docs.length === 0) fail("no objects rendered");

for (const obj of docs) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const Model = kinds[`${obj.apiVersion}/${obj.kind}`];
  if (!Model) { fail(`${id}: no schema known for ${obj.apiVersion} ${obj.kind}`); continue; }
  try { new Model(obj).validate(); } catch (e) { fail(`${id}: schema: ${e.message}`); }
}

const workloads = docs.filter((o) => ["Deployment", "StatefulSet", "Job"].includes(o.kind));
for (const w of workloads) {
  const id = `${w.kind}/${w.metadata.name}`;
  const pod = w.spec.template.spec;
  if (!pod.securityContext?.runAsNonRoot) fail(`${id}: pod must set runAsNonRoot`);
  for (const c of pod.containers) {
    const cid = `${id} container ${c.name}`;
    const r = c.resources || {};
    for (const k of ["cpu", "memory"]) {
      if (!r.requests?.[k]) fail(`${cid}: no ${k} request`);
      if (!r.limits?.[k]) fail(`${cid}: no ${k} limit`);
    }
    if (!c.securityContext?.readOnlyRootFilesystem) fail(`${cid}: root filesystem must be read-only`);
    if (c.securityContext?.allowPrivilegeEscalation !== false) fail(`${cid}: allowPrivilegeEscalation must be false`);
    if (w.kind !== "Job") {
      for (const p of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        if (!c[p]) fail(`${cid}: no ${p}`);
        else if (!c[p].grpc) fail(`${cid}: ${p} must be a native gRPC probe (grpc.health.v1)`);
      }
    }
  }
}

// Every serving workload has a PodDisruptionBudget selecting it.
for (const w of workloads.filter((o) => o.kind !== "Job")) {
  const labels = w.spec.template.metadata.labels;
  const covered = docs.some((o) => o.kind === "PodDisruptionBudget" &&
    Object.entries(o.spec.selector.matchLabels).every(([k, v]) => labels[k] === v));
  if (!covered) fail(`${w.kind}/${w.metadata.name}: no PodDisruptionBudget selects it`);
}

// Shard arithmetic: shards = pods per retrieval StatefulSet = shard Services = gateway
// fan-out targets.
const cm = docs.find((o) => o.kind === "ConfigMap" && o.metadata.name === "recpipe-config");
const shards = Number(cm?.data?.RECPIPE_SHARDS);
if (!Number.isInteger(shards) || shards < 1) fail("ConfigMap RECPIPE_SHARDS must be a positive integer");
const rsets = docs.filter((o) => o.kind === "StatefulSet" && o.metadata.name.startsWith("retrieval"));
if (rsets.length === 0) fail("no retrieval StatefulSet");
for (const s of rsets) {
  if (s.spec.replicas !== shards) fail(`StatefulSet/${s.metadata.name}: ${s.spec.replicas} pods but ${shards} shards`);
}
const shardSvcs = docs.filter((o) => o.kind === "Service" && /^retrieval-shard-\d+$/.test(o.metadata.name));
const shardIdx = shardSvcs.map((s) => Number(s.spec.selector["apps.kubernetes.io/pod-index"])).sort((a, b) => a - b);
if (shardIdx.join(",") !== [...Array(shards).keys()].join(",")) fail(`shard Services select pod indices [${shardIdx}] but there are ${shards} shards`);
const targets = (cm?.data?.RECPIPE_RETRIEVAL || "").split(",").filter(Boolean);
if (targets.length !== shards) fail(`RECPIPE_RETRIEVAL lists ${targets.length} shard addresses, expected ${shards}`);
targets.forEach((t, i) => { if (!t.includes(`retrieval-shard-${i}.`)) fail(`RECPIPE_RETRIEVAL entry ${i} (${t}) is not shard ${i}`); });

const expect = JSON.parse(process.argv[3] || "{}");
if (expect.shards !== undefined && expect.shards !== shards) fail(`expected ${expect.shards} shards, found ${shards}`);
if (expect.retrievalReplicas !== undefined && rsets.length !== expect.retrievalReplicas) fail(`expected ${expect.retrievalReplicas} retrieval replica sets, found ${rsets.length}`);
const hpa = docs.find((o) => o.kind === "HorizontalPodAutoscaler");
if (expect.hpa === true && !hpa) fail("expected a HorizontalPodAutoscaler for ranking");
if (expect.hpa === false && hpa) fail("expected no HorizontalPodAutoscaler");

if (errors.length) {
  for (const e of errors) console.error(e);
  process.exit(1);
}
console.log(`${overlay}: ${docs.length} objects valid; ${shards} shard(s) x ${rsets.length} replica set(s)`);
