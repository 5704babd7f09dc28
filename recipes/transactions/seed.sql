-- History that never came through the queue: 1,000 transactions over 21 providers (provider-20
-- only exists here). Startup reconciliation puts their totals into Redis before the pipeline
-- consumes anything. Deterministic, and safe to run twice.
INSERT INTO historical_transactions (id, provider, amount, currency, ts)
SELECT 'hist-' || g,
       'provider-' || (g % 21),
       (((g * 7919) % 100000 + 1)::numeric / 100)::numeric(14, 2),
       'EUR',
       now() - g * interval '1 minute'
FROM generate_series(1, 1000) AS g
ON CONFLICT (id) DO NOTHING;
