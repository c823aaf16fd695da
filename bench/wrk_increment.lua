-- wrk script: POST /api/counter/increment (the write hot path).
wrk.method = "POST"
wrk.path = "/api/counter/increment"
wrk.headers["Content-Length"] = "0"
