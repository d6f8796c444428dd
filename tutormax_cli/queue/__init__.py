"""The queue door: Redis Streams in, PostgreSQL or SQLite out (SPEC §6).

envelope.py (the wire format; `Message`) and letters.py (dead letters: `DeadLetter`,
`DeadLetterRecord`) → streams/ (the only Redis talker: the connection, the consumer group,
every read bounded, the dead-letter stream, the numbers) → worker.py (the loop)
with policy.py (what becomes of each message; retries; parent watermarks), isolate.py (a
batch through the pipeline; a record that crashes it), telemetry.py (counters, logs,
gauges), runtime.py (faults, signals), metrics.py (/metrics, /healthz, /readyz); dlq.py,
publish.py and stats.py serve the other queue commands.
"""
