"""Small shared tools: money, clock, pagination, idempotency, rate limits, images, jobs."""
