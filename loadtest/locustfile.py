"""Load test with the original lab's task mix.

    locust -f loadtest/locustfile.py --headless -u 100 -r 20 -t 30s --host http://127.0.0.1:8080

Weights: GET counter 15, increment 7, decrement 4, reset 1; each simulated user waits
0.5 to 2 s between tasks. Every task checks for status 200 and a ``value`` field.
"""

from locust import HttpUser, between, task


def _check(response):
    if response.status_code != 200:
        response.failure(f"status {response.status_code}: {response.text[:200]}")
        return
    try:
        body = response.json()
    except ValueError:
        response.failure(f"not JSON: {response.text[:200]}")
        return
    if not isinstance(body, dict) or "value" not in body:
        response.failure(f"no 'value' field: {body!r}")
    else:
        response.success()


class CounterUser(HttpUser):
    wait_time = between(0.5, 2)

    @task(15)
    def get_counter(self):
        with self.client.get("/api/counter", catch_response=True) as r:
            _check(r)

    @task(7)
    def increment(self):
        with self.client.post("/api/counter/increment", catch_response=True) as r:
            _check(r)

    @task(4)
    def decrement(self):
        with self.client.post("/api/counter/decrement", catch_response=True) as r:
            _check(r)

    @task(1)
    def reset(self):
        with self.client.post("/api/counter/reset", catch_response=True) as r:
            _check(r)
