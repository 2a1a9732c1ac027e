"""Points: the ledger (lots, holds, expiry), sign-in, order binding, birthday gifts,
growth value and levels, and the earning rules."""
