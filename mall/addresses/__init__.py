"""Members' delivery addresses, used by physical redemptions and orders."""
