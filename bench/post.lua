-- wrk script: POST the reference payload with the API token (env BENCH_TOKEN).
wrk.method = "POST"
wrk.body = '{"name":"bench","items":[1,2,3]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["token"] = os.getenv("BENCH_TOKEN")
