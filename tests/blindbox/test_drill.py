from __future__ import annotations

import pytest

from mall.blindbox import drill


@pytest.mark.nodb
@pytest.mark.parametrize(
    "url", ["http://example.com:8000", "http://10.0.0.5:8000", "https://127.0.0.1:8000"]
)
async def test_drill_refuses_anything_but_localhost(url: str) -> None:
    assert await drill.main(["--base-url", url]) == 2
