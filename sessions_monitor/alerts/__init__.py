"""Alerts: be told when a bot fails, gets stuck or is lost, or the upstream is down.

How an alert travels:

1. Something happens that a rule may care about. A session fails or is lost: `services`
   calls `outbox.enqueue_session_alert` inside the transaction that stores the event, so the
   alert exists exactly when the event does. A session stays too long in one status, or the
   upstream stays unreachable: the relay's `watchdog` (one per deployment: leader-elected
   through the relay's leases) finds it and enqueues the same way.
2. One `AlertDelivery` row per matching rule: the outbox. Its `dedup_key` makes one episode
   raise one alert per rule however often it is noticed; its `webhook_id` is the
   idempotency key, the same on every attempt.
3. The relay's `sender` claims due rows (a conditional UPDATE, so two relays never send one
   row at once), sends them through `channels` (Standard Webhooks, Slack, email), and
   records the outcome; failures are retried with backoff. At least once: a relay killed
   after sending and before recording sends again, with the same `webhook-id`.
4. After the commit the alert is also broadcast on the channel layer's `alerts` group, for
   the toasts and browser notifications of users who follow the session.
"""
