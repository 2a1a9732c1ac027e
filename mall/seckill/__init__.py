"""Flash sales: sessions and items, the one-Lua attempt, the winner stream consumer and
the reconciler that proves Redis and the database agree."""
