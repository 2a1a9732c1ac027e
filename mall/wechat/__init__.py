"""WeChat server calls on httpx: login, access token, phone number, subscribe messages."""
