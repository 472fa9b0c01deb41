"""The fault drill: a scaled MeetingDash deployment on private PostgreSQL, Redis and nginx,
faults one at a time, and a table of what was emitted, stored, lost, marked and received.

`make drill` runs it at drill scale; `tests/e2e/test_drill.py` runs it small in CI.
"""
