"""Points mall: items priced in points, redemption with Redis-held stock, gated activities."""
