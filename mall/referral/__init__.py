"""Referral: promoters (KOC members and staff salespeople) with share codes, customers
bound to them (first binding wins), promoter levels with commission rates, and an
append-only commission ledger written when a bound customer's order completes and
reversed on refund."""
