-- wrk script: POST /api/counter/increment, each request with its own Idempotency-Key
-- (first attempts, no replays): the exactly-once path through the Lua script.
local counter = 0
local prefix

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  prefix = string.format("bench-%d-%d-", os.time(), math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/api/counter/increment",
    {["Content-Length"] = "0", ["Idempotency-Key"] = prefix .. counter})
end
