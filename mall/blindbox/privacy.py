"""What blind boxes hold about a member (see `mall.members.privacy`): the draw log. It is
append-only and re-derivable (the disclosure audit), so it stays as it is."""

from __future__ import annotations

from mall.blindbox.models import BlindBoxDraw
from mall.members.privacy import Section

SECTIONS = [Section("blind_box_draws", BlindBoxDraw, exclude=("points_entry_key",))]
