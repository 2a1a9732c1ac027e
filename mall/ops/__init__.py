"""Operations at scale: the Redis key layout for rolling deploys (`mall layout`), and
backup and restore (`mall backup`, `mall restore`). See docs/SCALING.md."""
