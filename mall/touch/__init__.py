"""One-to-one touches: the members' subscribe-message grants and the monthly touch cap
(every kind of message shares it; see `mall.touch.service`)."""
