"""Interventions: select whom to contact (plan), deliver (send), honour opt-outs (suppression),
record everything in an append-only outbox (outbox), and measure the effect (report)."""
