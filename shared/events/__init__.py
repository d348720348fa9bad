"""The event backbone: catalogue, CloudEvents envelope, outbox, relay, consumer runner, DLQ."""
