"""Segments (crowd packs): rule-based groups of members, auto tags refreshed by a job,
and campaigns (a subscribe message or a gift pack) sent to a segment within the touch cap."""
