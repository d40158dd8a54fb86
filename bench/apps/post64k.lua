-- wrk script: every request POSTs a 64 KiB body (the post app answers with the length it read).
wrk.method = "POST"
wrk.body = string.rep("a", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
