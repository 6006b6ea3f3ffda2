"""The OpenAI-compatible HTTP gateway onto the pipeline (`fallback gateway`).

server.py           build the aiohttp app, run it
routes.py           the HTTP handlers (chat completions, models, health)
openai_request.py   OpenAI body -> pipeline Request (400 naming a bad field)
openai_response.py  pipeline Response -> chat.completion, chunks, or error
errors.py           OpenAI's error shape
keys.py             API keys -> tenants (hashes only)
limits.py           per-key requests per minute and calls in flight
request_ids.py      ids whose responses land on this replica's partitions
response_waiters.py calls waiting for their response; late/duplicate counts
pipeline_link.py    the Kafka side: send a request, wait for its response
process.py          a gateway in a child process (tests, bench)
"""
