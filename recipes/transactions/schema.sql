-- The ledger table. Riverbed appends to it (ON CONFLICT (id) DO NOTHING); the window counter
-- sums it. Amounts are exact decimals in whole cents: a value with a third decimal is refused
-- (and dead-lettered with the reason) instead of being rounded silently.
CREATE TABLE IF NOT EXISTS historical_transactions (
    id          text PRIMARY KEY,
    provider    text NOT NULL,
    amount      numeric NOT NULL CONSTRAINT amount_in_cents CHECK (amount = round(amount, 2)),
    currency    text,
    ts          timestamptz,
    inserted_at timestamptz NOT NULL DEFAULT now()
);
