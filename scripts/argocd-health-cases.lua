-- Cases for the Argo CD CounterApp health check (manifests/gitops/argocd/argocd-cm-health.yaml).
-- Run by scripts/validate-packaging.sh: `lua5.4 this-file HEALTH_SCRIPT`.
local source = assert(io.open(arg[1])):read("a")
local function health(obj)
  local chunk = assert(load(source, "health", "t", { obj = obj, ipairs = ipairs }))
  return chunk()
end

local function cond(t, s, reason, message)
  return { type = t, status = s, reason = reason or "R", message = message or "" }
end
local function app(generation, observed, conditions, paused)
  return {
    metadata = { generation = generation },
    spec = { paused = paused },
    status = conditions and { observedGeneration = observed, conditions = conditions } or nil,
  }
end

local cases = {
  { "no status yet", app(1, nil, nil), "Progressing" },
  { "ready, current generation", app(2, 2, { cond("Ready", "True", "Ready", "all good") }), "Healthy" },
  { "ready but an older generation", app(3, 2, { cond("Ready", "True") }), "Progressing" },
  { "not ready", app(1, 1, { cond("Ready", "False", "WaitingForPods", "2/4 web pods") }), "Progressing" },
  { "reconciling", app(1, 1, { cond("Ready", "True"), cond("Reconciling", "True", "Scaling") }), "Progressing" },
  { "stalled", app(1, 1, { cond("Ready", "False"), cond("Stalled", "True", "InvalidSpec", "fix it") }), "Degraded" },
  { "stalled wins over reconciling",
    app(1, 1, { cond("Reconciling", "True"), cond("Stalled", "True") }), "Degraded" },
  { "paused", app(1, 1, { cond("Ready", "False", "Paused") }, true), "Suspended" },
  { "no Ready condition", app(1, 1, { cond("Available", "True") }), "Progressing" },
}

local failed = 0
for _, c in ipairs(cases) do
  local got = health(c[2])
  if got.status ~= c[3] then
    failed = failed + 1
    print(string.format("FAIL %s: want %s, got %s (%s)", c[1], c[3], got.status, got.message))
  else
    print(string.format("ok   %s: %s (%s)", c[1], got.status, got.message))
  end
  assert(type(got.message) == "string" and #got.message > 0, c[1] .. ": empty message")
end
local stalled = health(app(1, 1, { cond("Stalled", "True", "InvalidSpec", "fix it") }))
assert(stalled.message == "fix it", "the Stalled message reaches Argo CD")
print(string.format("%d passed, %d failed", #cases - failed, failed))
os.exit(failed == 0 and 0 or 1)
