-- wrk script: the original Locust task mix, weighted
-- GET /api/counter 15, increment 7, decrement 4, reset 1.
local weighted = {
  {"GET", "/api/counter", 15},
  {"POST", "/api/counter/increment", 7},
  {"POST", "/api/counter/decrement", 4},
  {"POST", "/api/counter/reset", 1},
}
local reqs = {}

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  for _, w in ipairs(weighted) do
    local r = wrk.format(w[1], w[2], {["Content-Length"] = "0"})
    for _ = 1, w[3] do
      reqs[#reqs + 1] = r
    end
  end
end

function request()
  return reqs[math.random(#reqs)]
end
