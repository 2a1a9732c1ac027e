"""Coupons: templates, gift packs, claims, the coupon's life, expiry reminders."""
